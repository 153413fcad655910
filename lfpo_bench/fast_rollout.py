"""Rollouts at the speed of the base model: switches applied around the trainer's no-grad ``generate`` calls.

peft keeps LoRA adapters in float32, so a plain LoRA forward in bf16 runs every adapter matmul as a float32
GEMM after casting the activations. For rollouts (no gradient) the trainer can instead:

- ``train.rollout.lora="merge"``: add each adapter's delta (``get_delta_weight``, scaling included) into its base
  weight and run with adapters disabled, then **restore the base weights bit for bit**
  from a saved copy (not peft's ``unmerge``, whose subtraction in bf16 would drift the base weights a little
  at every update). Costs one copy of the adapted weights during the rollout. Exact up to the rounding of
  the merged weight in the model's dtype (in float32: the same tokens, tested);
- ``train.rollout.lora="bf16"``: run the rollout under CUDA autocast to bfloat16, so adapter matmuls run in bf16
  too (no effect on a CPU float32 model);
- ``train.rollout.lora="plain"``: peft as is;
- ``train.rollout.tf32``: allow TF32 for float32 matmuls during rollouts (CUDA; the plain adapter path);
- ``train.rollout.use_cache``: the prefix KV cache in rollouts (native LLaDA; approximate, see docs/sampler.md).

Training forwards and backwards never see any of this; only rollouts (sampling) do.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch


def lora_layers(module):
    """(layer, adapter names) of every peft LoRA layer with an active adapter."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return []
    out = []
    for m in module.modules():
        if isinstance(m, LoraLayer) and not getattr(m, "merged", False):
            names = [a for a in m.active_adapters if a in m.lora_A]
            if names:
                out.append((m, names))
    return out


@contextmanager
def merged_adapters(module):
    """Adapters folded into the base weights, adapters disabled, base weights restored exactly afterwards."""
    layers = lora_layers(module)
    if not layers or not hasattr(module, "disable_adapter"):
        yield
        return
    saved = []
    with torch.no_grad():
        for layer, names in layers:
            w = layer.get_base_layer().weight
            saved.append((w, w.data.clone()))
            delta = sum(layer.get_delta_weight(a) for a in names)
            w.data.add_(delta.to(w.dtype))
    try:
        with module.disable_adapter():
            yield
    finally:
        with torch.no_grad():
            for w, orig in saved:
                w.data.copy_(orig)


@contextmanager
def fast_rollout(lm, cfg, sharded: bool = False):
    """The rollout switches of ``cfg`` (a ``RolloutConfig``) around sampler calls on ``lm``. ``sharded``: parameters
    are split across ranks (FSDP, ZeRO-3), where a merge would need the full weights: plain LoRA then."""
    mode = cfg.lora
    if sharded and mode == "merge":
        mode = "bf16"
    cuda = lm.device.type == "cuda"
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    if cuda and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    try:
        if mode == "merge":
            ctx = merged_adapters(lm.module)
        elif mode == "bf16" and cuda:
            ctx = torch.autocast("cuda", dtype=torch.bfloat16)
        else:
            ctx = nullcontext()
        with ctx:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
