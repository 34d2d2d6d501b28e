"""``geopera finetune``: segmentation, change and detection tasks on a pretrained backbone."""
