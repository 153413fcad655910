"""DeepSpeed ZeRO-2/3 configured from the accelerate launch config."""

from __future__ import annotations

import os

import torch

from ..types import UserError
from .ddp import TorchDist


class DeepSpeedDist(TorchDist):
    """DeepSpeed ZeRO stage 2 or 3 (``deepspeed_zero2.yaml`` / ``deepspeed_zero3.yaml``), configured from the
    accelerate launch config; the engine wraps the model and the trainer's AdamW.

    Backward passes and the optimiser step go through the engine (it reduces and partitions gradients,
    clips to ``train.grad_clip`` and steps); forwards go through the engine too (ZeRO-3 gathers parameters
    there). ZeRO-2 keeps full parameters on every rank; ZeRO-3 partitions them, so forwards run in lock-step
    as under FSDP and policy snapshots hold this rank's partition only. Checkpoints are the engine's own
    (``<run>/deepspeed/u<update>``, one file per rank) and resume under the same stage and process count."""

    engine = "deepspeed"

    def __init__(self, env: dict | None = None):
        super().__init__()
        self.config = deepspeed_config(dict(os.environ if env is None else env))
        self.stage = int(self.config["zero_optimization"]["stage"])
        self.shards_params = self.stage == 3
        self.ds = None

    def setup(self, lm, make_optimizer, grad_clip: float):
        import deepspeed

        opt = make_optimizer([p for p in lm.module.parameters() if p.requires_grad])
        self.ds, _, _, _ = deepspeed.initialize(model=lm.module, optimizer=opt, config={**self.config, "gradient_clipping": grad_clip})
        lm.forward_module = self.ds
        return opt  # the trainer's LR schedule drives its param groups, which the ZeRO optimiser shares

    def zero_grad(self, opt) -> None:
        return None  # the engine zeroes gradients after each step

    def backward(self, loss, last: bool) -> None:
        self.ds.set_gradient_accumulation_boundary(last)
        self.ds.backward(loss, scale_wrt_gas=False)  # the loss already carries its micro-batch weight

    def step(self, opt, params, max_norm: float) -> float:
        self.ds.step()
        gn = self.ds.get_global_grad_norm()
        return float(gn) if gn is not None else float("nan")

    def local(self, p):
        return p.ds_tensor if self.stage == 3 else p

    def _gathered(self, params, modifier_rank=None):
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(params), modifier_rank=modifier_rank, enabled=self.stage == 3)

    def trainable_state(self, module):
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        with self._gathered([p for _, p in named]):
            return {n: p.detach().clone() for n, p in named}

    def load_trainable(self, module, state):
        named = [(n, p) for n, p in module.named_parameters() if n in state]
        with self._gathered([p for _, p in named], modifier_rank=0), torch.no_grad():
            if self.stage < 3 or self.is_main:  # under ZeRO-3 rank 0's values are partitioned out on exit
                for n, p in named:
                    p.copy_(state[n].to(p.device, p.dtype))

    def model_state_for_save(self, module):
        if self.stage < 3:
            return None
        with self._gathered(module.parameters()):
            return {n: t.detach().cpu().clone() for n, t in module.state_dict().items()} if self.is_main else {}

    # ---- checkpoints: the engine's own, per rank --------------------------------------------------------
    def save_training_state(self, run_dir, module, opt, bank, next_update):
        from pathlib import Path

        tag = f"u{next_update}"
        folder = Path(run_dir) / "deepspeed"
        self.ds.save_checkpoint(str(folder), tag=tag, save_latest=False)
        torch.save(bank.state_dict(), folder / tag / f"bank_rank{self.rank}.pt")  # ZeRO-3: this rank's partitions
        self.barrier()
        return {"model": self.trainable_state(module), "opt": {"deepspeed_tag": tag}, "bank": {}}

    def load_training_state(self, run_dir, module, opt, bank, state):
        from pathlib import Path

        tag = state["opt"]["deepspeed_tag"]
        folder = Path(run_dir) / "deepspeed"
        path, _ = self.ds.load_checkpoint(str(folder), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise UserError(f"DeepSpeed checkpoint {folder / tag} is missing or incomplete; start a new run dir")
        bank.load_state_dict(torch.load(folder / tag / f"bank_rank{self.rank}.pt", map_location=self.local(bank.params[0][1]).device))

    def after_checkpoint(self, run_dir, next_update):
        import shutil
        from pathlib import Path

        if not self.is_main:
            return
        for old in (Path(run_dir) / "deepspeed").glob("u*"):
            if old.name != f"u{next_update}":
                shutil.rmtree(old, ignore_errors=True)


def deepspeed_config(env: dict) -> dict:
    """The DeepSpeed config for the trainer, from accelerate's environment (``--zero_stage``, or the JSON named
    by ``deepspeed_config_file``). Batch sizes are the trainer's business (one engine step per optimiser step);
    unsupported settings raise."""
    import json

    cfg: dict = {}
    file = env.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if file and file.lower() != "none":
        try:
            cfg = json.loads(open(file).read())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read the DeepSpeed config {file}: {e}") from None
    zero = dict(cfg.get("zero_optimization") or {})
    stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or zero.get("stage", 2))
    if stage not in (2, 3):
        raise UserError(f"DeepSpeed ZeRO stage {stage} is not supported: use 2 (lfpo_bench/accelerate/deepspeed_zero2.yaml) "
                        "or 3 (deepspeed_zero3.yaml)")
    for key, name in (("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "offload_optimizer"),
                      ("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "offload_param")):
        device = (env.get(key) or (zero.get(name) or {}).get("device") or "none").lower()
        if device != "none":
            raise UserError(f"DeepSpeed {name} to {device!r} is not supported by lfpo-bench (the trainer's AdamW is a torch "
                            f"optimiser); set {name}_device: none, or use FSDP with fsdp_offload_params: true")
    if env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "false").lower() == "true":
        raise UserError("zero3_init_flag: true is not supported: every rank loads the model before the engine partitions "
                        "it; set zero3_init_flag: false")
    mp = env.get("ACCELERATE_MIXED_PRECISION", "no")
    if mp != "no" or any((cfg.get(k) or {}).get("enabled") in (True, "true") for k in ("fp16", "bf16")):
        raise UserError("DeepSpeed mixed precision is not supported: set mixed_precision: \"no\" (real models load in bf16 "
                        "already) and drop fp16/bf16 from the DeepSpeed config")
    zero["stage"] = stage
    if stage == 3:
        # policy snapshots are swapped into each rank's partition between forwards: no parameter may stay
        # gathered (persistent small parameters, or reuse across forwards) or a swap would not be seen
        zero.update(stage3_param_persistence_threshold=0, stage3_max_reuse_distance=0)
    return {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "zero_optimization": zero,
            "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}
