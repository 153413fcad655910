"""Data parallelism on top of a process group started by ``accelerate launch`` (DDP-style; gloo on CPU, NCCL
on GPU). Never a home-made launcher: ``accelerate launch -m lfpo_bench.cli run ...``.

What each rank does: it takes its share of the update's prompts (the prompts and each prompt's sampling
noise are functions of (seed, update, global prompt index), so sharding does not change them), computes
rewards and advantages for its whole groups locally, computes gradients, and all-reduces them (mean) before
clipping and the optimiser step, so all ranks keep identical parameters. With the micro-batch size equal to
the per-rank batch, 2 ranks x B reproduce 1 rank x 2B (tested). Evaluation is sharded by problem and gathered
on rank 0, which alone writes rows, logs and checkpoints.

Only DDP semantics are supported (``lfpo_bench/accelerate/ddp.yaml``). The trainer swaps old/reference
parameters in place and owns its optimiser step, so FSDP and DeepSpeed (any ZeRO stage) would need the
sharding engine to take over both; ``world()`` refuses them with a clear error instead of running
something that only looks sharded. Under FSDP every rank would also have to run the same number of
forward passes in lock-step, which data-parallel rollouts with early stopping do not guarantee.
"""

from __future__ import annotations

import os

import torch

from .trainer import Dist
from .types import UserError


class TorchDist(Dist):
    def __init__(self):
        import torch.distributed as dist

        self._d = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0

    def all_reduce_grads(self, params) -> None:
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self._d.all_reduce(flat)
        flat /= self.world_size
        i = 0
        for g in grads:
            g.copy_(flat[i : i + g.numel()].view_as(g))
            i += g.numel()

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(t) for _ in range(self.world_size)]
        self._d.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    def gather_objects(self, obj) -> list:
        out = [None] * self.world_size
        self._d.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self._d.barrier()


def world() -> Dist:
    """The process group started by ``accelerate launch`` (or torchrun), or a single-process stand-in."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    if fsdp or deepspeed:
        raise UserError(f"{'FSDP' if fsdp else 'DeepSpeed'} is not supported yet: the trainer swaps old/reference parameters "
                        "in place and owns the optimiser step, so only DDP semantics are correct. Launch with "
                        "`accelerate launch --config_file lfpo_bench/accelerate/ddp.yaml ...` (LoRA on an 8B model fits "
                        "one 80 GB GPU per rank)")
    try:
        from accelerate import PartialState
    except ImportError as e:
        raise UserError("multi-process runs need accelerate: pip install 'lfpo-bench[dist]'") from e
    state = PartialState()  # initialises the process group from the launcher's environment
    if torch.cuda.is_available():
        torch.cuda.set_device(state.local_process_index)
    return TorchDist()
