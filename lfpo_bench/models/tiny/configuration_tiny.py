"""Config of the built-in tiny masked-diffusion model.

This file and ``modeling_tiny.py`` are copied next to every saved checkpoint (``register_for_auto_class``),
so they must only use relative imports and the transformers API.
"""

from transformers import PretrainedConfig


class TinyDLMConfig(PretrainedConfig):
    model_type = "lfpo_tiny_dlm"

    def __init__(
        self,
        vocab_size: int = 104,
        d_model: int = 128,
        n_layers: int = 4,
        n_heads: int = 4,
        mlp_ratio: int = 4,
        max_position_embeddings: int = 2048,
        mask_token_id: int = 1,
        pad_token_id: int = 0,
        eos_token_id: int = 2,
        bos_token_id: int = 3,
        sep_token_id: int = 4,
        dropout: float = 0.0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.mlp_ratio = mlp_ratio
        self.max_position_embeddings = max_position_embeddings
        self.mask_token_id = mask_token_id
        self.sep_token_id = sep_token_id
        self.dropout = dropout
        # transformers 5.x expects these on every config
        kwargs.setdefault("use_cache", False)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(
            pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id, **kwargs
        )
