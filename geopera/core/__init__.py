"""What every command needs: errors, typed configs with ``--set``, safe outputs, stage contracts.

Nothing here imports a command package (``geopera.pretrain``, ``geopera.finetune``...).
"""
