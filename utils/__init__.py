"""Metrics, losses, padding, distributed helpers, logging and checkpoints."""
