"""Experiment tracking in MLflow: runs, nested runs, metrics and artifacts."""
