"""The harness's own LLaDA: a bidirectional LLaMA-style transformer (RMSNorm, RoPE, SwiGLU, no causal mask).

Why not the hub's ``modeling_llada.py``: under transformers 5.x it fails to load (no ``post_init``, an old
``tie_weights`` signature, no ``use_cache`` in the config), and before October 2025 it ignored the attention
mask, which silently broke left-padded batches. Module names match the official checkpoint
(``model.transformer.blocks.{i}.q_proj`` ...), so its safetensors load by name with no remote code.

Differences from the official code, on purpose:

1. positions are counted from the first real token (from ``attention_mask``), so a left-padded prompt is
   computed exactly as it would be alone; the official code uses absolute positions including padding;
2. padding keys are masked in SDPA attention;
3. a prefix KV cache (``prefix_len`` / ``past_key_values``) for Fast-dLLM-style block decoding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_llada import LLaDAConfig


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x.to(dtype)) if self.weight.dtype == dtype else (self.weight * x).to(dtype)


def rope_tables(pos: torch.Tensor, d: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of the rotary embedding (split-half layout), float32 [B, 1, T, D], computed once per
    forward and shared by every layer (per-layer recomputation costs ~30 small kernels a layer on a GPU)."""
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, device=pos.device, dtype=torch.float32) / d))
    ang = pos.float()[:, None, :, None] * inv  # [B, 1, T, D/2]
    ang = torch.cat([ang, ang], -1)
    return ang.cos(), ang.sin()


def rope(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Apply the rotary embedding in float32. x [B, H, T, D], rot from ``rope_tables``."""
    cos, sin = rot
    d = x.shape[-1]
    xf = x.float()
    rotated = torch.cat([-xf[..., d // 2 :], xf[..., : d // 2]], -1)
    return (xf * cos + rotated * sin).to(x.dtype)


def init_weights(module: nn.Module) -> None:
    """Random init of the native implementations (LLaDA, Dream): N(0, 0.02) weights, zero biases, unit norms."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, RMSNorm):
        nn.init.ones_(module.weight)


class LLaDABlock(nn.Module):
    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        d, h, hk = cfg.d_model, cfg.n_heads, cfg.n_kv_heads
        self.h, self.hk, self.dh, self.theta = h, hk, d // h, cfg.rope_theta
        bias = cfg.include_bias
        self.attn_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, hk * self.dh, bias=bias)
        self.v_proj = nn.Linear(d, hk * self.dh, bias=bias)
        self.attn_out = nn.Linear(d, d, bias=bias)
        self.ff_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.ff_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=bias)  # gate
        self.up_proj = nn.Linear(d, cfg.mlp_hidden_size, bias=bias)
        self.ff_out = nn.Linear(cfg.mlp_hidden_size, d, bias=bias)

    def forward(self, x, rot, key_mask, past=None):
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, T, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.hk, self.dh).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.hk, self.dh).transpose(1, 2)
        q, k = rope(q, rot), rope(k, rot)
        kv = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        if self.hk != self.h:
            k, v = k.repeat_interleave(self.h // self.hk, 1), v.repeat_interleave(self.h // self.hk, 1)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.attn_out(a.transpose(1, 2).reshape(B, T, -1))
        h = self.ff_norm(x)
        x = x + self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))
        return x, kv


class _Transformer(nn.Module):
    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(cfg.embedding_size, cfg.d_model),
            "blocks": nn.ModuleList([LLaDABlock(cfg) for _ in range(cfg.n_layers)]),
            "ln_f": RMSNorm(cfg.d_model, cfg.rms_norm_eps),
        })
        if not cfg.weight_tying:
            self.transformer["ff_out"] = nn.Linear(cfg.d_model, cfg.embedding_size, bias=False)


class LLaDAModelLM(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"
    _no_split_modules = ["LLaDABlock"]
    supports_gradient_checkpointing = True

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = _Transformer(config)
        self.gradient_checkpointing = False
        self.post_init()

    def _init_weights(self, module):
        init_weights(module)

    def get_input_embeddings(self):
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value):
        self.model.transformer["wte"] = value

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, prefix_len: int | None = None,
                logits_range: tuple[int, int] | None = None, **kwargs) -> MaskedLMOutput:
        """Logits for ``input_ids``. With ``past_key_values`` (from a call with ``prefix_len``), ``input_ids`` are
        the tokens after that prefix and ``attention_mask`` covers prefix + suffix. With ``prefix_len``, the
        output's ``past_key_values`` holds each layer's keys/values of the first ``prefix_len`` positions.
        ``logits_range=(a, b)``: logits of positions a..b-1 only."""
        tr = self.model.transformer
        B, T = input_ids.shape
        P = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, P + T, dtype=torch.long, device=input_ids.device)
        am = attention_mask.bool()
        if position_ids is None:
            position_ids = (am.long().cumsum(-1) - 1).clamp(min=0)[:, P:]
        key_mask = None if bool(am.all()) else am[:, None, None, :]
        x = tr["wte"](input_ids)
        rot = rope_tables(position_ids, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        cache = []
        for i, blk in enumerate(tr["blocks"]):
            past = past_key_values[i] if past_key_values is not None else None
            if self.gradient_checkpointing and self.training:
                x, kv = torch.utils.checkpoint.checkpoint(blk, x, rot, key_mask, past, use_reentrant=False)
            else:
                x, kv = blk(x, rot, key_mask, past)
            if prefix_len is not None:
                cache.append((kv[0][:, :, :prefix_len], kv[1][:, :, :prefix_len]))
        if logits_range is not None:  # the sampler needs one block's logits: skip the LM head elsewhere (exact)
            x = x[:, logits_range[0] : logits_range[1]]
        x = tr["ln_f"](x)
        logits = tr["ff_out"](x) if "ff_out" in tr else F.linear(x, tr["wte"].weight)
        out = MaskedLMOutput(logits=logits)
        out.prefix_cache = cache if prefix_len is not None else None  # (not `past_key_values`: deprecated name in 5.x)
        return out
