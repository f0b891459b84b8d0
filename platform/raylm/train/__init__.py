"""Training on Ray Train workers hosting DeepSpeed engines."""
