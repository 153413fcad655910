"""Mask-Aware Policy Gradients: MAP's block convention, the position log-probability by hand (softmax and
Bradley-Terry, both competition scopes), the GSPO sequence ratio by hand, the sampled blocks, and the
token likelihood against the exact replay."""

import math

import pytest
import torch
from test_d2 import M, StatePolicy, random_trajectories

from lfpo_bench.likelihood import PositionRule, map_bounds, step_merge_logps, step_merge_segment
from lfpo_bench.registry import METHODS

lsm = torch.log_softmax


def test_map_blocks_hold_the_steps_after_their_start_and_skip_the_first_step():
    assert map_bounds(128, 32) == [1 + 4 * n for n in range(32)]
    assert map_bounds(4, 4) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="divide"):
        map_bounds(8, 3)
    # block n = steps (n b, (n+1) b]: with b = 2, steps 1-2 -> block 0, 3-4 -> block 1, step 0 -> none
    assert step_merge_segment(torch.tensor([[0, 1, 2, 3, 4]]), map_bounds(4, 2)).tolist() == [[-1, 0, 0, 1, 1]]


def _case():
    # 4 tokens over 3 steps, blocks of one step (T = N = 3): commits [0, 1, 2, 2]
    W = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0.5, 0], [0, 0, 0.5, 1.0], [0.3, 0, 0, 1.5]])
    U = torch.tensor([[0.0, 0, 0, 0], [0, -1.0, 1.0, 0], [1.0, 0, 0, 0], [0, 0.5, 0, 0]])
    pol = StatePolicy(1, W, U)
    comp = torch.tensor([[0, 1, 2, 3]])
    commit = torch.tensor([[0, 1, 2, 2]])
    pid, pm = torch.tensor([[5]]), torch.ones(1, 1, dtype=torch.long)
    return W, U, pol, comp, commit, pid, pm


@pytest.mark.parametrize("method", ["softmax", "bradley_terry"])
@pytest.mark.parametrize("scope", ["segment", "position"])
def test_position_logps_by_hand(method, scope):
    W, U, pol, comp, commit, pid, pm = _case()
    rule = PositionRule(method=method, scope=scope)
    tok, pos = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=map_bounds(3, 3), position=rule)
    # block 0 (step 1): input state has token 0 clean -> logits W + 1 U; token 1 competes with tokens 2, 3
    z = W + U
    c1 = z[1, 1]  # its own token's logit ("gt")
    a2, a3 = z[2].max(), z[3].max()  # competitors' max logits
    if method == "softmax":
        want1 = c1 - torch.logsumexp(torch.stack([c1, a2, a3]), 0)
    else:
        want1 = torch.nn.functional.logsigmoid(c1 - a2) + torch.nn.functional.logsigmoid(c1 - a3)
    # block 1 (step 2): state with tokens 0, 1 clean -> W + 2 U; tokens 2 and 3 both at step 2: no later
    # block, and no later step inside their block either: no competitors (softmax: log 1 = 0; BT: empty sum)
    assert torch.allclose(pos[0], torch.stack([torch.tensor(0.0), want1, torch.tensor(0.0), torch.tensor(0.0)]), atol=1e-6)
    want_tok = torch.stack([torch.tensor(0.0), lsm(W[1] + U[1], -1)[1], lsm(W[2] + 2 * U[2], -1)[2], lsm(W[3] + 2 * U[3], -1)[3]])
    assert torch.allclose(tok[0], want_tok, atol=1e-6)  # token 0 (step 0) is in no block


def test_position_scope_position_adds_later_steps_of_the_same_block():
    W, U, pol, comp, commit, pid, pm = _case()
    bounds = [1, 3]  # block 0: steps 1-2, block 1: steps 3+ (empty): commits [0, 1, 2, 2] put tokens 1, 2, 3 in block 0
    _, seg_pos = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=bounds, position=PositionRule(scope="position"))
    _, seg_seg = step_merge_logps(pol, pid, pm, comp, commit, mask_id=M, bounds=bounds, position=PositionRule(scope="segment"))
    z = W + U  # block 0's state: token 0 clean
    # scope position: token 1 (step 1) competes with tokens 2, 3 (step 2, same block); tokens 2, 3 with none
    want = z[1, 1] - torch.logsumexp(torch.stack([z[1, 1], z[2].max(), z[3].max()]), 0)
    assert torch.allclose(seg_pos[0, 1], want, atol=1e-6) and float(seg_pos[0, 2]) == 0.0
    assert float(seg_seg[0, 1]) == 0.0  # scope segment: no later block, no competitor


def test_position_rule_checks_its_settings():
    with pytest.raises(ValueError, match="scope"):
        PositionRule(scope="block")
    with pytest.raises(ValueError, match="source 'gt'"):
        PositionRule(confidence="margin", source="gt")
    PositionRule(confidence="margin", source="max")


def test_gspo_sequence_ratio_by_hand():
    from lfpo_bench.baselines.map import pg_loss

    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    old = torch.tensor([[-1.0, -2.5, -3.0], [-1.2, -1.0, -1.0]])
    tokens = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -1.0])
    loss, clipped = pg_loss("gspo", lp, old, adv, tokens, 0.2, 0.1, 0.2)
    r0 = math.exp((0.0 + 0.5) / 2)  # 1.284 -> clipped to 1.2; A = +1: min(1.284, 1.2) = 1.2
    r1 = math.exp(0.2 / 3)  # 1.069, inside [0.9, 1.2]; A = -1: min(-1.069, -1.069)
    assert r0 > 1.2
    assert math.isclose(loss.item(), -(1.2 + -r1) / 2, rel_tol=1e-6)
    assert clipped.tolist() == [1.0, 0.0]
    loss_r, _ = pg_loss("reinforce", lp, old, adv, tokens, 0.2, 0.1, 0.2)
    assert math.isclose(loss_r.item(), -((-1 - 2) * 1 + (-3) * -1) / 5, rel_tol=1e-6)


def test_all_blocks_with_n_equal_steps_give_the_exact_replay_but_for_the_first_step(tiny_random):
    lm = tiny_random
    ids, am, g = random_trajectories(lm)
    with torch.no_grad():
        tok = step_merge_logps(lm, ids, am, g.completion, g.commit_step, mask_id=lm.mask_id, bounds=map_bounds(8, 8))
    later = g.commit_step > 0
    assert torch.allclose(tok[later], g.commit_logp[later], atol=1e-5)
    assert (tok[~later] == 0).all() and (~later).any()


def test_map_samples_k_valid_blocks_per_iteration_and_lowers_n_to_a_divisor():
    from test_methods import FakeCtx, make_batch

    cls = METHODS.get("map")
    m = cls(cls.Config(n_blocks=32, k_blocks=2))
    assert m.blocks(8) == 8 and m.blocks(6) == 6 and m.blocks(64) == 32 and cls(cls.Config(n_blocks=5)).blocks(8) == 4
    comp = torch.tensor([[1, 0, 1, 0]])
    b = make_batch(comp, torch.tensor([1.0]), torch.tensor([0.5]), steps=4, commit=torch.tensor([[0, 1, 2, 3]]))
    ctx = FakeCtx(None)
    # N = 4 blocks of one step: steps 1, 2, 3 -> blocks 0, 1, 2 hold a token each; block 3 (step 4) and step 0 none
    seen = set()
    for it in range(12):
        s = m.sampled(ctx, b, it, 0)
        assert len(s) == 2 and set(s) <= {0, 1, 2}
        seen |= set(s)
    assert seen == {0, 1, 2}  # the draw changes with the iteration
    assert cls(cls.Config(k_blocks=0)).sampled(ctx, b, 0, 0) == [0, 1, 2]  # K = 0: every block with a token
    assert torch.allclose(m.advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4), torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))  # RLOO


def test_map_loss_by_hand_on_a_position_only_policy():
    """GSPO on the token and position log-probs of the sampled blocks; with K = 0 the first step's tokens stay
    in the sequence averages (at log-prob 0 for both policies), as in the reference."""
    from lfpo_bench.baselines.map import pg_loss
    from test_methods import FakeCtx, TablePolicy, make_batch

    table = torch.tensor([[0.0, 0, 0], [0.0, math.log(3), 0], [math.log(2), 0, 0], [0.0, 0, 1.0]])
    pol = TablePolicy(table)
    comp = torch.tensor([[1, 0, 2], [1, 0, 2]])
    commit = torch.tensor([[0, 1, 2], [2, 1, 0]])
    b = make_batch(comp, torch.tensor([1.0, 0.0]), torch.tensor([1.0, -1.0]), steps=3, commit=commit, mask_id=2)
    cls = METHODS.get("map")
    for K in (0, 1):
        m = cls(cls.Config(k_blocks=K, eps_low=0.1, eps_high=0.2, position_eps_low=0.1, position_eps_high=0.2))
        state = m.prepare(FakeCtx(pol), b, 0)
        old, old_pos = state["old"] - 0.3, state["old_pos"] + 0.1  # ratios away from 1
        out = m.loss(FakeCtx(pol), b, {**state, "old": old, "old_pos": old_pos}, 0, 0)
        lp, pos = step_merge_logps(pol, b.prompt_ids, b.prompt_mask, comp, commit, mask_id=2, bounds=map_bounds(3, 3),
                                   position=PositionRule())
        blocks = m.sampled(FakeCtx(pol), b, 0, 0)
        seg = step_merge_segment(commit, map_bounds(3, 3))
        picked = sum((seg == j).float() for j in blocks)
        tokens = torch.ones(2, 3) if K == 0 else picked
        lp = lp * picked  # only the sampled blocks are computed
        pos = pos * picked
        want = (pg_loss("gspo", lp, old, torch.tensor([1.0, -1.0]), tokens, 0.2, 0.1, 0.2)[0]
                + pg_loss("gspo", pos, old_pos, torch.tensor([1.0, -1.0]), tokens, 0.2, 0.1, 0.2)[0])
        assert math.isclose(out.loss.item(), want.item(), rel_tol=1e-6), K
        if K == 0:  # by hand: every token's log-ratio is +0.3 (token) and -0.1 (position), the first step's too
            r, q = math.exp(0.3), math.exp(-0.1)  # 1.35 (clipped to 1.2 for A = +1, not for A = -1); 0.905 (inside)
            token = -(min(r, 1.2) * 1 + min(-r, -min(r, 1.2))) / 2
            position = -(q - q) / 2
            assert math.isclose(out.loss.item(), token + position, rel_tol=1e-6)
