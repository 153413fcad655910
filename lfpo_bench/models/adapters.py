"""Training setup for large models: LoRA adapters through peft and gradient checkpointing.

The reference policy of a LoRA model is the base model with adapters disabled (``PolicyBank`` uses
``disable_adapter()``), so no second copy of the weights is kept; old/EMA policies are snapshots of the
adapter weights only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..types import UserError

log = logging.getLogger(__name__)

# Linear layers that get adapters, per family (LLaDA: every block projection, not the LM head).
LORA_TARGETS = {
    "llada": r".*blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)",
    "dream": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "diffucoder": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "tiny": ["qkv", "proj", "fc", "out"],
}
DEFAULT_RANK = {"tiny": 0, "llada": 128, "dream": 128, "diffucoder": 128}


def prepare_for_training(lm, cfg) -> None:
    """Apply LoRA (``cfg.lora_r``; None = family default) and gradient checkpointing to ``lm`` in place."""
    family = lm.profile.name
    r = cfg.lora_r if cfg.lora_r is not None else DEFAULT_RANK.get(family, 0)
    if cfg.gradient_checkpointing:
        if not getattr(lm.module, "supports_gradient_checkpointing", False):
            raise UserError(f"model family {family!r} does not support gradient checkpointing")
        lm.module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if r <= 0:
        return
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise UserError("LoRA needs peft: pip install 'lfpo-bench[dist]' (or set --set train.lora_r=0 for full fine-tuning)") from e
    targets = LORA_TARGETS.get(family)
    if targets is None:
        raise UserError(f"no LoRA target modules known for family {family!r}")
    lcfg = LoraConfig(r=r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets, bias="none")
    import torch

    # LoRA's A matrices are drawn from the global RNG: seed it from the run's seed, so that every rank starts from
    # the same adapters and a rerun (or a different launch layout) starts from the same point
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        lm.module = get_peft_model(lm.module, lcfg)
    n_train = sum(p.numel() for p in lm.module.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in lm.module.parameters())
    log.info("LoRA r=%d alpha=%s on %s: %.2f%% of %d parameters trainable", r, cfg.lora_alpha, family, 100 * n_train / n_all, n_all)


def is_adapter_dir(path: Path) -> bool:
    return (path / "adapter_config.json").exists()


def load_adapter(path: Path, device, dtype, load_base):
    """A saved LoRA run: the base model named in adapter_config.json plus the adapters."""
    from peft import PeftModel

    base_name = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_name:
        raise UserError(f"{path}/adapter_config.json names no base model")
    lm = load_base(base_name)
    lm.module = PeftModel.from_pretrained(lm.module, path).to(device).eval()
    lm.name = str(path)
    return lm
