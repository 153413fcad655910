"""SPG, Sandwiched Policy Gradient (Wang et al., arXiv 2510.09541).

Block-wise masks (2 per sample): a random block among those the completion occupies, earlier blocks
clean, a uniform count of the block's tokens masked, later blocks and positions after EOS masked, other
clean tokens (prompt included) masked w.p. 0.15. Positive-advantage samples maximise the ELBO (lower
bound); the others minimise a mixture 0.5 EUBO + 0.5 ELBO (the upper bound "sandwich").
L = -sum_i A_i l_i |o_i| / sum_i |o_i|. No ratio, clip or KL; mu = 4.

Deviations from the reference code:

1. the EUBO and ELBO share the same two masks;
2. masks come from an explicit generator per (update, iteration, micro-batch);
3. normalisation by sum |o_i| is per micro-batch;
4. the ``p_other`` (0.15) masking also reaches the chosen block's own clean tokens (those its uniform count
   left visible); the reference applies it to the earlier blocks and the prompt only;
5. each of the ``n_masks`` masks draws its block independently; the reference permutes the blocks, so two
   masks of one sample never share a block;
6. the block length is a fixed ``block`` (32); the reference uses the rollout's block length. (On sudoku4,
   L = 16, both give one block.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lfpo_bench.likelihood import mask_generator, spg_bounds
from lfpo_bench.method import Method, scored_tokens
from lfpo_bench.registry import METHODS
from lfpo_bench.types import LossOut, float_


@dataclass(frozen=True)
class SPGConfig:
    beta_eubo: float = 1.5  # EUBO exponent (1.0 for Sudoku in the paper)
    mixture: float = 0.5  # weight of the EUBO in the negative-advantage objective (1.0 = EUBO only; collapses)
    block: int = 32  # block length of the block-wise masks
    n_masks: int = 2  # masks per sample
    p_other: float = 0.15  # masking probability of other clean tokens, prompt included
    mu: int = 4  # inner iterations per rollout batch
    temperature: float = 0.9  # rollout temperature
    remasking: str = "low_confidence"  # rollout remasking
    count_padding: bool = False  # count the EOS padding after the answer in the loss (the reference: no; method.scored_tokens)


def spg_objective(adv: torch.Tensor, elbo: torch.Tensor, eubo: torch.Tensor, length: torch.Tensor, mixture: float) -> torch.Tensor:
    """L = -sum_i A_i l_i |o_i| / sum_i |o_i|, l_i = ELBO if A_i > 0 else mixture*EUBO + (1-mixture)*ELBO."""
    ell = torch.where(adv > 0, elbo, mixture * eubo + (1 - mixture) * elbo)
    return -(adv * ell * length).sum() / length.sum().clamp(min=1)


@METHODS.register("spg")
class SPG(Method):
    """SPG: ELBO for positive, EUBO/ELBO mixture for negative advantages."""

    Config = SPGConfig

    defaults_by_family = {"sudoku": {"beta_eubo": 1.0}}  # SPG's sudoku script

    def loss(self, ctx, mb, state, it, m, chunk=0):
        c = self.cfg
        tokens = scored_tokens(mb, self.cfg.count_padding)
        elbo, eubo = spg_bounds(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, tokens,
                                mask_id=mb.mask_id, gen=mask_generator(ctx.mask_seed(it, m)), block=c.block,
                                n_masks=c.n_masks, p_other=c.p_other, beta=c.beta_eubo)
        adv = mb.advantages.to(elbo.device)
        length = tokens.sum(1).float().to(elbo.device)
        return LossOut(spg_objective(adv, elbo, eubo, length, c.mixture),
                       {"elbo": float_(elbo.mean()), "eubo": float_(eubo.mean())})
