"""DDP semantics over the launcher's process group: full replicas, gradients all-reduced by lfpo-bench."""

from __future__ import annotations

import torch

from .base import Dist


class TorchDist(Dist):
    """DDP semantics over the process group started by the launcher (gloo on CPU, NCCL on GPU)."""

    engine = "ddp"

    def __init__(self):
        import torch.distributed as dist

        self._d = dist
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.is_main = self.rank == 0
        # NCCL only moves CUDA tensors: small CPU tensors (rewards, counters) travel through this device
        self.comm_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")

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
        src = t.detach().contiguous().to(self.comm_device)
        parts = [torch.empty_like(src) for _ in range(self.world_size)]
        self._d.all_gather(parts, src)
        return torch.cat(parts).to(t.device)

    def gather_objects(self, obj) -> list:
        out = [None] * self.world_size
        self._d.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self._d.barrier()

    def _reduce(self, value: int, op) -> int:
        t = torch.tensor([int(value)], dtype=torch.long, device=self.comm_device)
        self._d.all_reduce(t, op=op)
        return int(t.item())

    def sum_int(self, n: int) -> int:
        return self._reduce(n, self._d.ReduceOp.SUM)

    def any(self, flag: bool) -> bool:
        return self._reduce(1 if flag else 0, self._d.ReduceOp.MAX) > 0
