"""Old, reference and EMA policies without second model copies: parameter snapshots swapped in place.

Only the *trainable* parameters are snapshotted (all of the tiny model; the LoRA adapters of a large
model). ``use("old")`` copies the snapshot into the live parameters for the duration of a ``with`` block
and copies the current values back afterwards. The copies are in-place under ``no_grad`` and bump the
parameters' version counters, so using a snapshot while an autograd graph through the live parameters is
alive fails loudly at backward instead of silently mixing weights: compute old/ref passes before the
current policy's forward, as every method here does.

For a PEFT model the reference policy is the base model with adapters disabled, so "ref" needs no
snapshot at all.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class PolicyBank:
    def __init__(self, module: torch.nn.Module, keep_old: bool, keep_ref: bool, local=None):
        self.module = module
        # ``local(p)``: the tensor holding this rank's values of p (p itself, or a ZeRO-3 partition)
        self.local = local or (lambda p: p)
        self.params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self.peft = hasattr(module, "disable_adapter") and hasattr(module, "peft_config")
        self.snapshots: dict[str, list[torch.Tensor]] = {}
        if keep_old:
            self.snapshots["old"] = self._copy()
        if keep_ref and not self.peft:
            self.snapshots["ref"] = self._copy()

    def _copy(self) -> list[torch.Tensor]:
        return [self.local(p).detach().clone() for _, p in self.params]

    @contextmanager
    def use(self, which: str):
        """Run the module with the ``which`` parameters ("current", "old" or "ref")."""
        if which == "current":
            yield
            return
        if which == "ref" and self.peft:
            with self.module.disable_adapter():
                yield
            return
        if which not in self.snapshots:
            raise KeyError(f"no {which!r} policy is kept; the method must declare uses_old/uses_ref")
        snap = self.snapshots[which]
        with torch.no_grad():
            live = self._copy()
            for (_, p), s in zip(self.params, snap):
                self.local(p).copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, p), s in zip(self.params, live):
                    self.local(p).copy_(s)

    @torch.no_grad()
    def ema_update(self, rate: float) -> None:
        """old <- rate * old + (1 - rate) * current (rate 0: old = current)."""
        for (_, p), o in zip(self.params, self.snapshots["old"]):
            o.mul_(rate).add_(self.local(p).detach(), alpha=1 - rate)

    def state_dict(self) -> dict:
        return {k: [t.clone() for t in v] for k, v in self.snapshots.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            self.snapshots[k] = [t.clone() for t in v]
