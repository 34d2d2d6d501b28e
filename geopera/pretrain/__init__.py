"""``geopera pretrain``: PerA pretraining from an archive inside an ROI."""
