"""Native LLaDA (no remote code)."""

from .configuration_llada import LLaDAConfig
from .modeling_llada import LLaDAModelLM

__all__ = ["LLaDAConfig", "LLaDAModelLM"]
