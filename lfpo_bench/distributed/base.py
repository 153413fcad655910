"""The engine interface (``Dist``: one process, every collective trivial) and the lock-step protocol
for sharded forwards (``Lockstep``)."""

from __future__ import annotations

from contextlib import contextmanager

import torch


class Dist:
    """One process: every collective is the identity. The base class of every engine."""

    rank = 0
    world_size = 1
    is_main = True
    engine = "single"
    shards_params = False  # forwards are collectives: ranks must run them in lock-step

    def setup(self, lm, make_optimizer, grad_clip: float):
        """Prepare ``lm`` (a ``DiffusionLM``) for training in place (shard its module, or route its forwards
        through an engine) and return the optimiser built by ``make_optimizer(params)`` over the trainable
        parameters as the engine lays them out (``grad_clip``: for engines that clip inside their step)."""
        return make_optimizer([p for p in lm.module.parameters() if p.requires_grad])

    # ---- one optimiser step: zero_grad, backward per micro-batch, step ---------------------------------
    def zero_grad(self, opt) -> None:
        opt.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Backward of one micro-batch's (weighted) loss; ``last``: the step's final backward."""
        loss.backward()

    def step(self, opt, params, max_norm: float) -> float:
        """Reduce gradients, clip them to ``max_norm`` and step; returns the gradient norm before clipping."""
        self.all_reduce_grads(params)
        gn = self.clip_grad_norm(params, max_norm)
        opt.step()
        return gn

    def local(self, p: torch.Tensor) -> torch.Tensor:
        """The tensor that holds this rank's values of parameter ``p`` (what policy snapshots copy)."""
        return p

    # ---- collectives -------------------------------------------------------------------------------
    def all_reduce_grads(self, params) -> None:
        return None

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def gather_objects(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        return None

    def sum_int(self, n: int) -> int:
        return int(n)

    def any(self, flag: bool) -> bool:
        return bool(flag)

    @contextmanager
    def main_first(self):
        """Rank 0 runs the block first (e.g. pretraining a missing cached model), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    # ---- parameters ----------------------------------------------------------------------------------
    def clip_grad_norm(self, params, max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def full_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """The whole tensor behind a (possibly sharded) parameter, as a plain tensor (collective if sharded)."""
        return t.detach()

    def shard_like(self, full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``full`` laid out like the (possibly sharded) parameter ``like``: the inverse of ``full_tensor``."""
        return full.to(like.device, like.dtype)

    def trainable_state(self, module) -> dict[str, torch.Tensor]:
        """Full copies of the trainable parameters (collective if sharded)."""
        return {n: self.full_tensor(p).clone() for n, p in module.named_parameters() if p.requires_grad}

    def load_trainable(self, module, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in module.named_parameters():
                if n in state:
                    p.copy_(self.shard_like(state[n], p))

    def optim_state(self, module, opt) -> dict:
        return opt.state_dict()

    def load_optim_state(self, module, opt, state: dict) -> None:
        opt.load_state_dict(state)

    def save_training_state(self, run_dir, module, opt, bank, next_update: int) -> dict:
        """The model, optimiser and policy-bank parts of a trainer checkpoint (collective if sharded; only rank
        0's return value is written)."""
        return {"model": self.trainable_state(module), "opt": self.optim_state(module, opt),
                "bank": {k: [self.full_tensor(t) for t in v] for k, v in bank.snapshots.items()}}

    def load_training_state(self, run_dir, module, opt, bank, state: dict) -> None:
        self.load_trainable(module, state["model"])
        self.load_optim_state(module, opt, state["opt"])
        like = [p for _, p in bank.params]
        bank.load_state_dict({k: [self.shard_like(t, p) for t, p in zip(v, like)] for k, v in state["bank"].items()})

    def after_checkpoint(self, run_dir, next_update: int) -> None:
        """Called once the checkpoint of ``next_update`` is published (engines drop older files here)."""
        return None

    def model_state_for_save(self, module) -> dict | None:
        """The state dict ``save_pretrained`` should write (None: let it read the module)."""
        return None

    def lockstep(self) -> Lockstep | None:
        """A ``Lockstep`` for the sampler when forwards are collectives, else None."""
        return Lockstep(self) if self.shards_params else None


class Lockstep:
    """Keeps forward passes aligned across ranks when each forward is a collective (sharded parameters).

    Before each real forward a rank announces that it is still going; once a rank is done it keeps answering
    "done" and runs a dummy forward for every round in which another rank is still going. Rounds match because
    every rank contributes exactly one flag per round."""

    def __init__(self, dist: Dist):
        self.dist = dist

    def going(self) -> None:
        self.dist.any(True)

    def drain(self, dummy_forward) -> int:
        n = 0
        while self.dist.any(False):
            dummy_forward()
            n += 1
        return n
