"""A small bidirectional transformer for masked diffusion, written by hand.

Why hand-written blocks and not ``nn.TransformerEncoder``: in calibration the latter (norm_first, no final
norm) did not learn 4x4 Sudoku at all, while these simple pre-norm blocks learned it at once.

Positions are learned and counted from the first real token (``attention_mask``), so a left-padded prompt
sees exactly the positions it would see alone. Attention is full (no causal mask); padding keys are masked.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_tiny import TinyDLMConfig


class Block(nn.Module):
    def __init__(self, cfg: TinyDLMConfig):
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, cfg.mlp_ratio * d)
        self.out = nn.Linear(cfg.mlp_ratio * d, d)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)  # [B, H, T, Dh]
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        x = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return x


class TinyDLM(PreTrainedModel):
    config_class = TinyDLMConfig
    base_model_prefix = "tiny"
    _no_split_modules = ["Block"]

    def __init__(self, config: TinyDLMConfig):
        super().__init__(config)
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        return self.tok

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        B, T = input_ids.shape
        attn = None
        if attention_mask is not None:
            am = attention_mask.bool()
            if position_ids is None:
                position_ids = (am.long().cumsum(-1) - 1).clamp(min=0)
            if not bool(am.all()):
                attn = am[:, None, None, :]  # [B, 1, 1, T] keys only
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        if int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(
                f"sequence needs position {int(position_ids.max())} but the tiny model has "
                f"max_position_embeddings={self.config.max_position_embeddings}; shorten the prompt or generation"
            )
        x = self.tok(input_ids) + self.pos(position_ids)
        for blk in self.blocks:
            x = blk(x, attn)
        return MaskedLMOutput(logits=self.head(self.ln_f(x)))
