"""Parallelism applied to a finished model: the plan check and the thin DeepSpeed layer."""
