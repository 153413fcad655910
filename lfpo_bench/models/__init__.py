"""Model families wrapped as ``DiffusionLM``."""
