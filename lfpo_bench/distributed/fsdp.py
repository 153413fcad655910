"""FSDP2 (``fully_shard``) configured from the accelerate launch config."""

from __future__ import annotations

import os

import torch

from ..types import UserError
from .ddp import TorchDist


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor"


class FSDPDist(TorchDist):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) configured from the accelerate launch config (``fsdp.yaml``).

    ``Accelerator.prepare`` is not used: it only shards on accelerators (on CPU it silently leaves the model
    whole, which would leave gradients un-reduced), and the trainer drives its own backward passes and
    optimiser step. The config's knobs are honoured or refused, never ignored: ``fsdp_version: 2``, the
    auto-wrap policy (``TRANSFORMER_BASED_WRAP`` with ``fsdp_transformer_layer_cls_to_wrap`` or the model's
    ``_no_split_modules``, or ``NO_WRAP``). Refused: ``fsdp_reshard_after_forward: false`` (gathered weights
    would hide policy swaps), parameter offload (untested) and mixed precision (real models load in bf16)."""

    engine = "fsdp"
    shards_params = True

    def __init__(self, env: dict | None = None):
        super().__init__()
        self.plan = fsdp_plan(dict(os.environ if env is None else env))

    def setup(self, lm, make_optimizer, grad_clip: float):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        module = lm.module
        device = next(module.parameters()).device
        mesh = init_device_mesh(device.type, (self.world_size,))
        kw = {"mesh": mesh, "reshard_after_forward": True}  # every forward sees the shards (policy swaps)
        units = wrap_units(module, self.plan)
        for unit in units:
            fully_shard(unit, **kw)
        fully_shard(module, **kw)
        if not any(_is_dtensor(p) for p in module.parameters()):
            raise RuntimeError("fully_shard left the model unsharded")
        return make_optimizer([p for p in module.parameters() if p.requires_grad])  # over the DTensor shards

    def all_reduce_grads(self, params) -> None:
        return None  # FSDP reduce-scattered (and averaged) the gradients in backward

    def clip_grad_norm(self, params, max_norm: float) -> float:
        gn = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return float(gn.full_tensor() if _is_dtensor(gn) else gn)

    def full_tensor(self, t):
        return t.detach().full_tensor() if _is_dtensor(t) else t.detach()

    def shard_like(self, full, like):
        if not _is_dtensor(like):
            return full.to(like.device, like.dtype)
        from torch.distributed.tensor import distribute_tensor

        # every rank holds the full tensor: each keeps its own slice, no communication
        return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)

    def optim_state(self, module, opt) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optim_state(self, module, opt, state) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))  # every rank read the file

    def model_state_for_save(self, module) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


_WRAP = ("TRANSFORMER_BASED_WRAP", "NO_WRAP")


def fsdp_plan(env: dict) -> dict:
    """What to shard and how, from accelerate's FSDP environment variables; unsupported settings raise."""
    def flag(name: str, default: str = "false") -> bool:
        return env.get(name, default).lower() == "true"

    if env.get("FSDP_VERSION", "1") != "2":
        raise UserError("FSDP1 is not supported: set `fsdp_version: 2` in the accelerate config "
                        "(lfpo_bench/accelerate/fsdp.yaml is a working one)")
    wrap = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP") or "TRANSFORMER_BASED_WRAP"
    if wrap not in _WRAP:
        raise UserError(f"fsdp_auto_wrap_policy {wrap!r} is not supported; use one of {list(_WRAP)}")
    refused = {"FSDP_ACTIVATION_CHECKPOINTING": "use --set train.gradient_checkpointing=true",
               "FSDP_CPU_RAM_EFFICIENT_LOADING": "every rank loads the checkpoint; set it to false",
               "FSDP_OFFLOAD_PARAMS": "parameter offload is not tested yet; set fsdp_offload_params: false"}
    for name, fix in refused.items():
        if flag(name):
            raise UserError(f"{name}=true (accelerate config) is not supported under lfpo-bench FSDP: {fix}")
    if not flag("FSDP_RESHARD_AFTER_FORWARD", "true"):
        raise UserError("fsdp_reshard_after_forward: false is not supported: weights kept gathered between forwards hide "
                        "the old/EMA policy swaps (and the optimiser would see unsharded parameters); set it to true")
    mp = env.get("ACCELERATE_MIXED_PRECISION", "no")
    if mp != "no":
        raise UserError(f"mixed_precision {mp!r} is not supported under FSDP: set mixed_precision: \"no\" (real models "
                        "load in bf16 already)")
    classes = [c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip()]
    return {"wrap": wrap, "classes": classes}


def wrap_units(module, plan: dict) -> list:
    """The submodules that become their own FSDP units (transformer blocks), outermost first."""
    if plan["wrap"] == "NO_WRAP":
        return []
    names = set(plan["classes"])
    if not names:
        for m in module.modules():
            names |= set(getattr(m, "_no_split_modules", None) or [])
    if not names:
        raise UserError("FSDP: the model names no block class (_no_split_modules); set fsdp_transformer_layer_cls_to_wrap "
                        "in the accelerate config")
    units = [m for m in module.modules() if type(m).__name__ in names]
    if not units:
        raise UserError(f"FSDP: no module of class {sorted(names)} in the model; fix fsdp_transformer_layer_cls_to_wrap")
    return units
