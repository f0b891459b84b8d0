"""raylm: train transformer language models on Ray and run compute-optimal scaling studies."""

__version__ = "0.1.0"
