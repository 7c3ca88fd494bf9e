"""optical: token-level optimal-transport distillation for cross-lingual retrieval."""

__version__ = "0.1.0"
