"""The built-in tiny masked-diffusion model (a transformers PreTrainedModel)."""

from .configuration_tiny import TinyDLMConfig
from .modeling_tiny import TinyDLM

__all__ = ["TinyDLMConfig", "TinyDLM"]
