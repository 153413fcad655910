"""Data parallelism and parameter sharding on top of ``accelerate launch``. Never a home-made launcher:
``accelerate launch --config_file lfpo_bench/accelerate/<config>.yaml -m lfpo_bench.cli run ...``.

Every engine is a ``Dist``; the trainer, evaluation and checkpointing talk to it, never to
torch.distributed directly, and never branch on the engine. ``world()`` picks one from the launcher's
environment:

- ``base.Dist``: one process (and the interface: every collective is trivial);
- ``ddp.TorchDist`` (``ddp.yaml``): full replicas; lfpo-bench all-reduces gradients;
- ``fsdp.FSDPDist`` (``fsdp.yaml``): FSDP2 ``fully_shard``; parameters, gradients and optimiser state sharded;
- ``zero.DeepSpeedDist`` (``deepspeed_zero2.yaml`` / ``deepspeed_zero3.yaml``): the DeepSpeed engine owns
  backward and the optimiser step; ZeRO-3 also partitions parameters.

In training each rank takes its share of the update's prompts (prompts and each prompt's sampling noise are
functions of (seed, update, global prompt index), so sharding does not change them), computes rewards and
advantages for its whole groups locally, and weights each micro-batch's loss by its share of the rows of
*all* ranks, so the averaged gradient is that of the global mean loss even when ranks drop different
numbers of zero-signal groups. Evaluation is sharded by problem and gathered on rank 0, which alone writes
rows, logs and checkpoints.

Under FSDP and ZeRO-3 every forward pass is a collective, so all ranks run the same forwards in the same
order ("lock-step", ``Dist.shards_params``): evaluation pads each rank's share to the same length,
data-dependent loops in the sampler go through ``base.Lockstep`` (a finished rank runs dummy forwards until
every rank is done), and the trainer pads each rank's micro-batches to the same count with zero-weight
copies. Tests: 2 ranks x B reproduce 1 rank x 2B under every engine, uneven ranks still do under FSDP and
ZeRO-3, and resume is bit-identical under the sharded ones.
"""

from __future__ import annotations

import os

import torch

from ..types import UserError
from .base import Dist, Lockstep
from .ddp import TorchDist
from .fsdp import FSDPDist, fsdp_plan, wrap_units
from .zero import DeepSpeedDist, deepspeed_config

__all__ = ["Dist", "Lockstep", "TorchDist", "FSDPDist", "DeepSpeedDist", "world", "fsdp_plan", "wrap_units", "deepspeed_config"]


def world() -> Dist:
    """The engine named by the launcher's environment (``accelerate launch`` or torchrun), or one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp:
        fsdp_plan(dict(os.environ))  # refuse a bad config before any model work
    if deepspeed:
        deepspeed_config(dict(os.environ))
        try:
            import deepspeed as _  # noqa: F401
        except ImportError as e:
            raise UserError("the DeepSpeed launch config needs deepspeed: pip install 'lfpo-bench[deepspeed]'") from e
    try:
        from accelerate import PartialState
    except ImportError as e:
        raise UserError("multi-process runs need accelerate: pip install 'lfpo-bench[dist]'") from e
    state = PartialState()  # initialises the process group from the launcher's environment
    if torch.cuda.is_available():
        torch.cuda.set_device(state.local_process_index)
    if deepspeed:
        return DeepSpeedDist()
    return FSDPDist() if fsdp else TorchDist()
