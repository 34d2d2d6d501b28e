"""Training utilities: schedules (and, with pretraining, the Lightning task)."""
