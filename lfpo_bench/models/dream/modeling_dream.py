"""The harness's own Dream (Dream-v0, DiffuCoder): a bidirectional Qwen2-style transformer (RMSNorm, RoPE,
grouped-query attention with q/k/v biases, SwiGLU, no causal mask) whose logits at position i predict token
i + 1 (the family profile realigns them).

Why not the hub's ``modeling_dream.py``: under transformers 5.x it fails to load (``ROPE_INIT_FUNCTIONS
["default"]`` is gone; its ``from_pretrained`` override passes a keyword 5.x rejects) and, once patched, the
rotary ``inv_freq`` buffers built in ``__init__`` come back uninitialised after loading: wrong logits and no
error. Here the rotary tables are computed from the config at every forward (nothing to initialise), and
module names match the official checkpoint (``model.layers.{i}.self_attn.q_proj`` ...), so its safetensors
load by name with no remote code.

Padding: the sampler passes a 2-D ``[B, T]`` mask; keys at padding are masked and positions are counted from
the first real token, as Dream's own generation does (its 4-D mask and ``tok_idx``), so a left-padded prompt
computes as it would alone.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from ..llada.modeling_llada import RMSNorm, init_weights, rope, rope_tables
from .configuration_dream import DreamConfig


class DreamAttention(nn.Module):
    def __init__(self, cfg: DreamConfig):
        super().__init__()
        d, h, hk = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
        self.h, self.hk, self.dh = h, hk, d // h
        self.q_proj = nn.Linear(d, h * self.dh, bias=True)
        self.k_proj = nn.Linear(d, hk * self.dh, bias=True)
        self.v_proj = nn.Linear(d, hk * self.dh, bias=True)
        self.o_proj = nn.Linear(h * self.dh, d, bias=False)

    def forward(self, x, rot, key_mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.hk, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.hk, self.dh).transpose(1, 2)
        q, k = rope(q, rot), rope(k, rot)
        if self.hk != self.h:
            k, v = k.repeat_interleave(self.h // self.hk, 1), v.repeat_interleave(self.h // self.hk, 1)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.o_proj(a.transpose(1, 2).reshape(B, T, -1))


class DreamMLP(nn.Module):
    def __init__(self, cfg: DreamConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DreamLayer(nn.Module):
    def __init__(self, cfg: DreamConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = DreamAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = DreamMLP(cfg)

    def forward(self, x, rot, key_mask):
        x = x + self.self_attn(self.input_layernorm(x), rot, key_mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class _Base(nn.Module):
    def __init__(self, cfg: DreamConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([DreamLayer(cfg) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DreamLM(PreTrainedModel):
    config_class = DreamConfig
    base_model_prefix = "model"
    _no_split_modules = ["DreamLayer"]
    supports_gradient_checkpointing = True
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = _Base(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.gradient_checkpointing = False
        self.post_init()

    def _init_weights(self, module):
        init_weights(module)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_range: tuple[int, int] | None = None,
                **kwargs) -> MaskedLMOutput:
        """Native (shifted) logits: position i predicts token i + 1. ``logits_range=(a, b)``: positions a..b-1 only."""
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones(B, T, dtype=torch.long, device=input_ids.device)
        am = attention_mask.bool()
        if position_ids is None:
            position_ids = (am.long().cumsum(-1) - 1).clamp(min=0)
        key_mask = None if bool(am.all()) else am[:, None, None, :]
        x = self.model.embed_tokens(input_ids)
        rot = rope_tables(position_ids, self.config.hidden_size // self.config.num_attention_heads, self.config.rope_theta)
        for layer in self.model.layers:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, rot, key_mask, use_reentrant=False)
            else:
                x = layer(x, rot, key_mask)
        if logits_range is not None:
            x = x[:, logits_range[0] : logits_range[1]]
        return MaskedLMOutput(logits=self.lm_head(self.model.norm(x)))
