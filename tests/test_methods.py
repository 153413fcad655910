"""Method maths by hand (advantages, clip, KL, each loss on tiny tensors) and trajectory-replay exactness."""

import math
from contextlib import contextmanager

import pytest
import torch

from lfpo_bench.decoding import Decoding
from lfpo_bench.lfpo import LFPO, LFPOConfig, contrastive_ce, optimality_weight, stratified_steps
from lfpo_bench.method import group_center, kl_k3, masked_mean, ppo_clip, rloo, zscore
from lfpo_bench.registry import METHODS
from lfpo_bench.types import RolloutBatch

LN2, LN3 = math.log(2), math.log(3)


# ---- advantages ------------------------------------------------------------------------------------
def test_group_center_rloo_zscore_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    assert group_center(r, 4).tolist() == [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]
    assert torch.allclose(rloo(r, 4)[:4], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3]))
    assert torch.allclose(rloo(r, 4)[4:], torch.zeros(4))
    assert torch.allclose(zscore(r, 4)[:4], torch.tensor([1, -1, -1, 1]) * 0.5 / 0.5001)


def test_lfpo_optimality_weights_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert optimality_weight(r, 4, LFPOConfig()).tolist() == [0.75, 0.25, 0.25, 0.75]
    assert optimality_weight(r, 4, LFPOConfig(a_max=0.25)).tolist() == [1.0, 0.0, 0.0, 1.0]  # clipped
    assert optimality_weight(torch.tensor([0.9, 0.1, 0.5, 0.5]), 4, LFPOConfig(weighting="binary")).tolist() == [1, 0, 0, 0]


# ---- clip and KL -----------------------------------------------------------------------------------
def test_ppo_clip_by_hand():
    lp, old = torch.tensor([math.log(1.6), math.log(1.6), math.log(0.4)]), torch.zeros(3)
    adv = torch.tensor([1.0, -1.0, 1.0])
    loss, clipped = ppo_clip(lp, old, adv, eps=0.5)
    # ratio 1.6, A=+1: min(1.6, 1.5) = 1.5; A=-1: min(-1.6, -1.5) = -1.6; ratio 0.4, A=+1: min(0.4, 0.5) = 0.4
    assert torch.allclose(loss, torch.tensor([-1.5, 1.6, -0.4]))
    assert clipped.tolist() == [1.0, 0.0, 0.0]


def test_k3_kl_by_hand():
    val = kl_k3(torch.tensor([0.0]), torch.tensor([math.log(0.5)]))
    assert math.isclose(val.item(), 0.5 + math.log(2) - 1, rel_tol=1e-6)
    assert kl_k3(torch.tensor([-1.3]), torch.tensor([-1.3])).item() == 0.0


def test_masked_mean_divides_by_the_token_count():
    assert masked_mean(torch.tensor([[1.0, 2.0], [3.0, 100.0]]), torch.tensor([[1, 1], [1, 0]])).item() == 2.0


# ---- LFPO pieces -----------------------------------------------------------------------------------
def test_contrastive_ce_by_hand_in_logit_and_prob_space():
    z, z_old, y = torch.zeros(1, 2), torch.tensor([[LN3, 0.0]]), torch.tensor([0])
    pos, neg = contrastive_ce(z, z_old, y, beta=1.0, mix="logit")
    assert math.isclose(pos.item(), LN2, rel_tol=1e-6)  # z_pos = z
    assert math.isclose(neg.item(), math.log(10 / 9), rel_tol=1e-5)  # z_neg = 2 z_old - z = [2 ln3, 0]
    pos, neg = contrastive_ce(z, z_old, y, beta=1.0, mix="prob")
    assert math.isclose(pos.item(), LN2, rel_tol=1e-6)
    assert neg.item() < 1e-5  # 2 p_old - p = [1, 0] -> clamped and renormalised


def test_stratified_steps_draw_one_step_per_stratum():
    s = stratified_steps(8, 1000, 4, torch.Generator().manual_seed(0))
    for j in range(4):
        assert s[:, j].min() >= 2 * j and s[:, j].max() <= 2 * j + 1
    assert stratified_steps(2, 10, 4, torch.Generator().manual_seed(0)).max() <= 1


class TablePolicy(torch.nn.Module):
    """Logits depend on position only (a learnable table), plus an 'old' table used inside ctx.use('old')."""

    def __init__(self, table, old=None):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())
        self.old = old
        self.active_old = False
        self.mask_id = 1

    def forward(self, ids, am=None):
        t = self.old if self.active_old else self.table
        return t[: ids.shape[1]].expand(ids.shape[0], -1, -1)

    __call__ = torch.nn.Module.__call__


class FakeCtx:
    device = torch.device("cpu")
    update = 0

    def __init__(self, policy):
        self.policy = policy

    @contextmanager
    def use(self, which):
        self.policy.active_old = which == "old"
        try:
            yield
        finally:
            self.policy.active_old = False

    def mask_seed(self, it, m):
        return 1000 + 10 * it + m

    def ema_update(self, rate):
        pass


def make_batch(completion, rewards, adv, P=1, steps=2, commit=None, mask_id=1):
    N, L = completion.shape
    return RolloutBatch(
        prompt_ids=torch.full((N, P), 7), prompt_mask=torch.ones(N, P, dtype=torch.long), completion_ids=completion,
        completion_mask=torch.ones(N, L, dtype=torch.long), commit_step=commit if commit is not None else torch.zeros(N, L, dtype=torch.long),
        rewards=rewards, advantages=adv, group_size=N, steps=steps, mask_id=mask_id,
    )


def test_lfpo_loss_by_hand():
    # V=2 plus a mask id 2 never targeted; P=1 prompt position, L=2
    table = torch.zeros(3, 3)
    old = torch.tensor([[0, 0, 0], [LN3, 0, 0], [LN3, 0, 0]], dtype=torch.float)
    pol = TablePolicy(table, old)
    method = LFPO(LFPOConfig(k=1, beta=1.0))
    y = torch.tensor([[0, 1], [0, 0]])
    b = make_batch(y, torch.tensor([1.0, 0.0]), torch.tensor([0.5, -0.5]), mask_id=2)
    b.extras["r"] = torch.tensor([1.0, 0.0])
    states = {"states": [torch.tensor([[2, 2], [0, 2]])]}  # row 0 fully masked, row 1 only position 1
    out = method.loss(FakeCtx(pol), b, states, 0, 0, 0)
    # row 0 (r=1): CE_pos with z_pos = z = [0,0,0] over 3 classes: ln 3 at both positions
    # row 1 (r=0): position 1 only, y=0: z_neg = 2 z_old - z = [2 ln3, 0, 0] -> p0 = 9/11: ln(11/9)
    expected = (LN3 + math.log(11 / 9)) / 2
    assert math.isclose(out.loss.item(), expected, rel_tol=1e-5)


def test_lfpo_gradient_is_beta_times_clipped_advantage_times_ce_gradient_when_old_equals_current():
    table = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    pol = TablePolicy(table, old=table.clone())
    y = torch.tensor([[3, 4, 0]])
    b = make_batch(y, torch.tensor([1.0]), torch.tensor([0.3]), mask_id=1)
    for r in (1.0, 0.5, 0.2):
        b.extras["r"] = torch.tensor([r])
        pol.table.grad = None
        LFPO(LFPOConfig(k=1, beta=0.7)).loss(FakeCtx(pol), b, {"states": [torch.full((1, 3), 1)]}, 0, 0, 0).loss.backward()
        ref = torch.nn.Parameter(table.clone())
        ce = torch.nn.functional.cross_entropy(ref[1:4], y[0])  # mean over the 3 masked positions
        ce.backward()
        assert torch.allclose(pol.table.grad, 0.7 * (2 * r - 1) * ref.grad, atol=1e-6)


# ---- baselines on a position-only policy (log-probs independent of the masks) ------------------------
def _lp(table, P, completion):
    return torch.log_softmax(table[P : P + completion.shape[1]], -1).gather(1, completion[0][:, None]).squeeze(1)


def test_diffu_grpo_loss_by_hand():
    table = torch.tensor([[0.0, 0, 0], [0.0, LN3, 0], [LN2, 0, 0]])
    pol = TablePolicy(table)
    comp = torch.tensor([[1, 0], [1, 0]])
    m = METHODS.get("diffu_grpo")(METHODS.get("diffu_grpo").Config(mu=1, kl_beta=0.04, eps=0.5))
    b = make_batch(comp, torch.tensor([1.0, 0.0]), torch.tensor([0.5, -0.5]), mask_id=2)
    lp = _lp(table, 1, comp)  # ln(3/5), ln(2/4)
    old = lp.repeat(2, 1) - math.log(1.6)  # ratio 1.6 everywhere
    ref = lp.repeat(2, 1) - LN2  # KL k3 with d = -ln 2: 0.5 + ln2 - 1
    out = m.loss(FakeCtx(pol), b, {"old": [old], "ref": [ref]}, 0, 0)
    # A=+0.5: min(0.8, 0.75) -> -0.75; A=-0.5: min(-0.8, -0.75) = -0.8 -> +0.8; mean over 4 tokens
    pg = (2 * -0.75 + 2 * 0.8) / 4
    kl = 0.5 + LN2 - 1
    assert math.isclose(out.loss.item(), pg + 0.04 * kl, rel_tol=1e-5)
    assert math.isclose(out.metrics["clip_frac"], 0.5)


def test_wd1_loss_by_hand():
    table = torch.tensor([[0.0, 0, 0], [0.0, LN3, 0]])
    pol = TablePolicy(table)
    comp = torch.tensor([[1], [0]])
    cls = METHODS.get("wd1")
    m = cls(cls.Config(mu=1))
    b = make_batch(comp, torch.tensor([1.0, 0.0]), torch.tensor([0.5, -0.5]), mask_id=2)
    m.on_batch(b)
    lp1, lp0 = math.log(3 / 5), math.log(1 / 5)
    wp = torch.softmax(torch.tensor([0.5, -0.5]), 0)
    wn = torch.softmax(torch.tensor([-0.5, 0.5]), 0)
    expected = -(wp[0] * lp1 + wp[1] * lp0) + (wn[0] * lp1 + wn[1] * lp0)
    assert math.isclose(m.loss(FakeCtx(pol), b, {}, 0, 0).loss.item(), expected.item(), rel_tol=1e-5)


def test_spg_loss_by_hand_on_one_token_completions():
    # with a one-token completion every mask covers it, so ELBO = EUBO = log p
    table = torch.tensor([[0.0, 0, 0], [0.0, LN3, 0]])
    pol = TablePolicy(table)
    cls = METHODS.get("spg")
    m = cls(cls.Config(mu=1))
    b = make_batch(torch.tensor([[1], [0]]), torch.tensor([1.0, 0.0]), torch.tensor([0.5, -0.5]), mask_id=2)
    lp1, lp0 = math.log(3 / 5), math.log(1 / 5)
    expected = -(0.5 * lp1 + (-0.5) * lp0) / 2
    assert math.isclose(m.loss(FakeCtx(pol), b, {}, 0, 0).loss.item(), expected, rel_tol=1e-5)


def test_coupled_grpo_logp_is_one_and_a_half_logp_at_t_half():
    table = torch.tensor([[0.0, 0, 0], [0.0, LN3, 0], [LN2, 0, 0]])
    pol = TablePolicy(table)
    cls = METHODS.get("coupled_grpo")
    m = cls(cls.Config(mu=1, t_low=0.5, t_high=0.5, kl_beta=0.0))
    comp = torch.tensor([[1, 0], [1, 0]])
    b = make_batch(comp, torch.tensor([1.0, 0.0]), torch.tensor([1.0, -1.0]), mask_id=2)
    lp = 1.5 * _lp(table, 1, comp)
    old = lp.repeat(2, 1)  # ratio 1
    out = m.loss(FakeCtx(pol), b, {"old": [old], "ref": []}, 0, 0)
    assert math.isclose(out.loss.item(), 0.0, abs_tol=1e-6)  # A sums to zero, ratio 1
    # gradient: -(1/4) sum_tokens A_i * 1.5 * grad lp
    out.loss.backward()
    ref = torch.nn.Parameter(table.clone())
    lps = torch.log_softmax(ref[1:3], -1).gather(1, comp[0][:, None]).squeeze(1)
    (-(1.0 * 1.5 * lps.sum() - 1.0 * 1.5 * lps.sum()) / 4).backward()
    assert torch.allclose(pol.table.grad, ref.grad, atol=1e-6)


def test_espo_loss_by_hand_on_one_token_completions():
    table = torch.tensor([[0.0, 0, 0], [0.0, LN3, 0]])
    pol = TablePolicy(table)
    cls = METHODS.get("espo")
    m = cls(cls.Config(mu=1, eps=0.2, kl_beta=0.01))
    comp = torch.tensor([[1], [0]])
    b = make_batch(comp, torch.tensor([1.0, 0.0]), torch.tensor([1.0, -1.0]), mask_id=2)
    elbo = torch.tensor([math.log(3 / 5), math.log(1 / 5)])  # L=1: ELBO = log p
    old = elbo - math.log(1.5)  # ratio 1.5 -> clipped at 1.2 for A=+1; -1.5 for A=-1
    ref = elbo - 1.0
    out = m.loss(FakeCtx(pol), b, {"old": [old], "ref": [ref]}, 0, 0)
    pg = (-1.2 + 1.5) / 2
    kl = 0.5 * 1.0**2 / 1
    assert math.isclose(out.loss.item(), pg + 0.01 * kl, rel_tol=1e-5)


def test_trace_rl_drops_easy_and_hard_groups_and_uses_zscore():
    cls = METHODS.get("trace_rl")
    m = cls()
    r = torch.tensor([1.0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert m.keep_groups(r, 4).tolist() == [False, True, False]
    assert torch.allclose(m.advantages(r, 4)[4:8], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (math.sqrt(3) / 4 + 1e-4))


# ---- trajectory replay exactness -----------------------------------------------------------------
def test_trajectory_replay_reproduces_the_samplers_trajectory_logprob(tiny_random):
    from lfpo_bench.likelihood import trajectory_logps
    from lfpo_bench.sampler import generate

    lm = tiny_random
    ids, am = lm.encode_prompts(["12", "3456"])
    g = generate(lm, ids, am, Decoding(gen_length=8, steps=8, block_length=4, temperature=1.0, remasking="random"), generator=torch.Generator().manual_seed(0), record_trajectory=True)
    with torch.no_grad():
        lp = trajectory_logps(lm, ids, am, g.completion, g.commit_step, mask_id=lm.mask_id, shrink=1)
    assert torch.allclose(lp, g.commit_logp, atol=1e-5)
    with torch.no_grad():
        merged = trajectory_logps(lm, ids, am, g.completion, g.commit_step, mask_id=lm.mask_id, shrink=8)
    assert not torch.allclose(merged, g.commit_logp, atol=1e-3)  # merging steps is an approximation


@pytest.mark.parametrize("bad", [{"weighting": "sigmoid"}, {"k": 0}, {"ema": 1.0}])
def test_lfpo_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        LFPOConfig(**bad)


@pytest.mark.parametrize("scope", ["batch", "group"])
def test_wd1_softmax_scope_by_hand_on_two_groups(scope):
    # two groups of 2 with different advantage spreads: the batch softmax and the group softmax differ
    table = torch.tensor([[0.0, 0, 0], [0.0, LN3, 0]])
    pol = TablePolicy(table)
    cls = METHODS.get("wd1")
    m = cls(cls.Config(mu=1, softmax_scope=scope))
    adv = torch.tensor([0.5, -0.5, 2.0, -2.0])
    b = make_batch(torch.tensor([[1], [0], [1], [0]]), torch.tensor([1.0, 0.0, 1.0, 0.0]), adv, mask_id=2)
    b.group_size = 2
    m.on_batch(b)
    lp = torch.tensor([math.log(3 / 5), math.log(1 / 5)] * 2)
    if scope == "batch":  # the reference: softmax(A, dim=0) over the batch, one sum
        expected = float(-(torch.softmax(adv, 0) * lp).sum() + (torch.softmax(-adv, 0) * lp).sum())
    else:  # within each group, groups averaged
        per = [float(-(torch.softmax(a, 0) * x).sum() + (torch.softmax(-a, 0) * x).sum()) for a, x in zip(adv.view(2, 2), lp.view(2, 2))]
        expected = sum(per) / 2
    # the trainer weighs each micro-batch by its share of rows: split in two, the objective is the same
    halves = [b.select(slice(0, 2)), b.select(slice(2, 4))]
    got = sum(0.5 * m.loss(FakeCtx(pol), h, {}, 0, 0).loss.item() for h in halves)
    assert math.isclose(m.loss(FakeCtx(pol), b, {}, 0, 0).loss.item(), expected, rel_tol=1e-5)
    assert math.isclose(got, expected, rel_tol=1e-5)
    with pytest.raises(ValueError, match="softmax_scope"):
        cls.Config(softmax_scope="device")
