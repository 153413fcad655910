"""d2 StepMerge: the segment bounds, the merged trajectory log-likelihood by hand on a policy whose logits
depend on the state, exactness at one step per segment, and the loss by hand (its chunks sum to the token
mean of the clipped objective plus the KL)."""

import math

import pytest
import torch
from test_methods import LN2, LN3, FakeCtx, TablePolicy, make_batch

from lfpo_bench.decoding import Decoding
from lfpo_bench.likelihood import step_merge_bounds, step_merge_logps, step_merge_segment, trajectory_logps
from lfpo_bench.registry import METHODS

M = 9  # mask id of the toy policy


class StatePolicy(torch.nn.Module):
    """logits[n, pos] = W[pos] + (clean completion tokens in the input) * U[pos]: a state-dependent policy whose
    log-probs can be written down by hand."""

    def __init__(self, P, W, U):
        super().__init__()
        self.P, self.W, self.U = P, W, U

    def forward(self, ids, am=None):
        clean = (ids[:, self.P:] != M).sum(1).float()  # [N]
        L = ids.shape[1]
        Wf = torch.zeros(L, self.W.shape[1])
        Uf = torch.zeros(L, self.W.shape[1])
        Wf[self.P:], Uf[self.P:] = self.W, self.U
        return Wf[None] + clean[:, None, None] * Uf[None]

    __call__ = torch.nn.Module.__call__


def test_bounds_and_segments():
    assert step_merge_bounds(128, 8) == [0, 16, 32, 48, 64, 80, 96, 112]
    assert step_merge_bounds(5, 2) == [0, 2]  # int(5 / 2) = 2
    assert step_merge_bounds(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="N <= steps"):
        step_merge_bounds(4, 8)
    seg = step_merge_segment(torch.tensor([[0, 1, 2, 3, 4]]), [0, 2])
    assert seg.tolist() == [[0, 0, 1, 1, 1]]


def test_step_merge_logps_by_hand():
    # 3 tokens over 2 steps: a at step 0, b and c at step 1. V = 3 real tokens.
    W = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 0.5]])
    U = torch.tensor([[0.0, 0, 0], [0, -1.0, 1.0], [1.0, 0, 0]])
    pol = StatePolicy(1, W, U)
    comp = torch.tensor([[0, 1, 2]])
    commit = torch.tensor([[0, 1, 1]])
    pid, pm = torch.tensor([[5]]), torch.ones(1, 1, dtype=torch.long)
    lsm = torch.log_softmax

    # N = 2: a read from the all-masked state (0 clean), b and c from [a, M, M] (1 clean)
    got = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=[0, 1])
    want = [lsm(W[0], -1)[0], lsm(W[1] + U[1], -1)[1], lsm(W[2] + U[2], -1)[2]]
    assert torch.allclose(got[0], torch.stack(want), atol=1e-6)
    # N = 1: every token from the all-masked state (d1's proxy without prompt masking)
    got1 = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=[0])
    assert torch.allclose(got1[0], torch.stack([lsm(W[i], -1)[i] for i in range(3)]), atol=1e-6)
    # only=j computes segment j alone, with the same values there
    part = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=[0, 1], only=1)
    assert part[0, 0] == 0 and torch.allclose(part[0, 1:], got[0, 1:])


def test_prompt_masking_is_one_draw_shared_by_every_segment():
    P = 6

    class PromptReader(torch.nn.Module):  # logits depend on which prompt tokens are masked
        def forward(self, ids, am=None):
            k = (ids[:, :P] == M).float() @ torch.arange(1.0, P + 1)  # [N]
            return k[:, None, None] * torch.ones(ids.shape[1], 5)[None] * torch.linspace(0, 1, 5)

        __call__ = torch.nn.Module.__call__

    pol = PromptReader()
    comp, commit = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[0, 1, 2, 3]])
    pid, pm = torch.arange(P)[None], torch.ones(1, P, dtype=torch.long)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    full = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=[0, 2], p_mask_prompt=0.5, gen=g())
    parts = sum(step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=[0, 2], p_mask_prompt=0.5, gen=g(), only=j)
                for j in range(2))
    assert torch.allclose(full, parts)
    unmasked = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=[0, 2])
    assert not torch.allclose(full, unmasked)  # the draw masked some prompt tokens


def random_trajectories(lm):
    """Two prompts decoded in 8 steps with random remasking at temperature 1, the commit record kept."""
    from lfpo_bench.sampler import generate

    ids, am = lm.encode_prompts(["12", "3456"])
    g = generate(lm, ids, am, Decoding(gen_length=8, steps=8, block_length=4, temperature=1.0, remasking="random"),
                 generator=torch.Generator().manual_seed(0), record_trajectory=True)
    return ids, am, g


def test_one_step_per_segment_is_the_exact_trajectory_logprob(tiny_random):
    lm = tiny_random
    ids, am, g = random_trajectories(lm)
    with torch.no_grad():
        sm = step_merge_logps(lm, ids, am, g.completion, g.commit_step, mask_id=lm.mask_id, bounds=list(range(8)))
        tr = trajectory_logps(lm, ids, am, g.completion, g.commit_step, mask_id=lm.mask_id, shrink=1)
        merged = step_merge_logps(lm, ids, am, g.completion, g.commit_step, mask_id=lm.mask_id, bounds=[0, 4])
    assert torch.allclose(sm, g.commit_logp, atol=1e-5) and torch.allclose(sm, tr, atol=1e-6)
    assert not torch.allclose(merged, g.commit_logp, atol=1e-3)  # merging steps is an approximation


def test_d2_loss_by_hand_chunks_sum_to_the_token_mean():
    # a position-only policy: log-probs do not depend on the state, so the numbers are diffu-GRPO's hand case
    table = torch.tensor([[0.0, 0, 0], [0.0, LN3, 0], [LN2, 0, 0]])
    pol = TablePolicy(table)
    comp = torch.tensor([[1, 0], [1, 0]])
    cls = METHODS.get("d2")
    m = cls(cls.Config(mu=1, kl_beta=0.04, eps=0.5, n_merged=2, p_mask_prompt=0.0))
    b = make_batch(comp, torch.tensor([1.0, 0.0]), torch.tensor([0.5, -0.5]), steps=2, commit=torch.tensor([[0, 1], [1, 0]]),
                   mask_id=2)
    assert m.chunks(b) == 2
    lp = torch.log_softmax(table[1:3], -1).gather(1, comp[0][:, None]).squeeze(1)  # ln(3/5), ln(2/4)
    old = lp.repeat(2, 1) - math.log(1.6)  # ratio 1.6 everywhere
    ref = lp.repeat(2, 1) - LN2  # k3 KL with d = -ln 2
    outs = [m.loss(FakeCtx(pol), b, {"old": [old], "ref": [ref]}, 0, 0, c) for c in range(2)]
    # A=+0.5: min(0.8, 0.75) -> -0.75; A=-0.5: -min(-0.8, -0.75) = +0.8; token mean over 4 tokens
    pg = (2 * -0.75 + 2 * 0.8) / 4
    kl = 0.5 + LN2 - 1
    assert math.isclose(sum(o.loss.item() for o in outs), pg + 0.04 * kl, rel_tol=1e-5)
    # each chunk holds its segment's tokens only: segment 0 = (row 0, pos 0) and (row 1, pos 1)
    assert math.isclose(outs[0].loss.item(), (-0.75 + 0.8) / 4 + 0.04 * kl * 2 / 4, rel_tol=1e-5)
    assert math.isclose(sum(o.metrics["clip_frac"] for o in outs) / 2, 0.5)  # the trainer's chunk average


def test_d2_defaults_follow_the_reference_scripts_and_cap_n_at_the_steps():
    from lfpo_bench.config import make_task

    cls = METHODS.get("d2")
    assert cls.task_defaults(make_task("sudoku4")) == {"mu": 8, "temperature": 0.3}
    assert cls.task_defaults(make_task("countdown3-mini")) == {"mu": 8, "n_merged": 16}
    assert cls.task_defaults(make_task("gsm8k")) == {}  # GSM8K's script: the config's own N = 8, mu = 12
    m = cls(cls.Config(n_merged=16))
    assert m.segments(4) == 4 and m.segments(64) == 16
    with pytest.raises(ValueError, match="n_merged"):
        cls.Config(n_merged=0)
