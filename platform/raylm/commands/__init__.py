"""Subcommands of ``raylm``: one module each, each with ``register(subparsers)``."""
