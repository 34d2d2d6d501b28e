"""Fine-tuning tasks: segmentation, change detection and object detection."""
