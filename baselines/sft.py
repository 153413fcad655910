"""SFT-only control: keep training with the masked-diffusion SFT objective on the task's reference
completions, with the same number of updates and prompts per update as the RL methods, and no rewards.

It answers "does RL beat simply training more on the data?". It needs a task with reference completions
(``Task.sft_target``): the synthetic tasks, GSM8K (its worked answers) and the code tasks (canonical
solutions).
"""

from __future__ import annotations

from dataclasses import dataclass

from lfpo_bench.likelihood import mask_generator, sft_loss
from lfpo_bench.method import Method, scored_tokens
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut


@dataclass(frozen=True)
class SFTConfig:
    t_min: float = 0.05  # lower end of the mask ratio t ~ U(t_min, 1)
    mu: int = 1  # optimiser steps per batch
    count_padding: bool = True  # train on the EOS padding after the answer too (LLaDA's SFT recipe: EOS is part of the response)


@METHODS.register("sft")
class SFT(Method):
    """SFT-only control: masked-diffusion SFT on reference completions, no RL."""

    Config = SFTConfig
    needs_rollouts = False

    def loss(self, ctx, mb, state, it, m, chunk=0):
        gen = mask_generator(ctx.mask_seed(it, m))
        tokens = None if self.cfg.count_padding else scored_tokens(mb, False)
        loss = sft_loss(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, gen, self.cfg.t_min, tokens=tokens)
        return LossOut(loss, {})
