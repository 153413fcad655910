"""Native Dream / DiffuCoder (no remote code)."""

from .configuration_dream import DreamConfig, check_supported
from .modeling_dream import DreamLM

__all__ = ["DreamConfig", "DreamLM", "check_supported"]
