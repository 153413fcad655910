"""Gradient fidelity: the reference gradient g* is the exact policy gradient (checked by enumeration on a
problem small enough to enumerate), the replayed trajectory log-probability is the sampler's own, and a
loss that is REINFORCE itself converges to g*."""

import itertools

import torch

from lfpo_bench.gradcheck import (
    GradcheckConfig,
    cosine,
    flat_grad,
    method_gradients,
    reinforce_gradient,
    sample_trajectories,
    table,
    unbiased_ratio,
)
from lfpo_bench.likelihood import trajectory_logps
from lfpo_bench.models.loader import new_tiny
from lfpo_bench.task import Scored, Task
from lfpo_bench.types import Example

DIGITS = set("0123456789")


class TwoChars(Task):
    """Two generated characters; reward = share of digits among them (a function of the token pair)."""

    name = "two-chars"
    gen_length = 2
    steps = 2
    block_length = 2
    splits = ("train", "validation", "test")

    def _load(self, split):
        return [Example(f"{split}/0", "ab", None)]

    def prompt(self, ex, style="chat"):
        return ex.question

    def extract(self, completion):
        return completion

    def score(self, ex, completion):
        return sum(c in DIGITS for c in completion[:2]) / 2

    def score_batch(self, examples, completions):
        return [Scored(self.score(e, c), {}) for e, c in zip(examples, completions)]


def no_mask_model(seed=0):
    """A tiny random model that never proposes the mask token (so every trajectory commits real tokens)."""
    lm = new_tiny(seed, d_model=32, n_layers=1, n_heads=2, max_position_embeddings=16)
    base = type(lm)

    def call(self, ids, am=None):
        logits = base.__call__(self, ids, am).clone()
        logits[..., self.mask_id] = -1e4
        return logits * 3.0  # sharper than uniform: a gradient worth measuring

    lm.__class__ = type("NoMaskTiny", (base,), {"__call__": call})
    return lm


def exact_objective(lm, task, ex):
    """J = E[R] by enumeration: the first step commits either position (prob 1/2) with a token from the
    all-masked state, the second commits the other position given the first."""
    V = lm(torch.zeros(1, 1, dtype=torch.long)).shape[-1]
    ids, am = lm.encode_prompts([task.prompt(ex)], 2)
    M = lm.mask_id
    toks = torch.arange(V)
    chars = [lm.decode(torch.tensor([[a, b]]))[0] for a, b in itertools.product(range(V), repeat=2)]
    R = torch.tensor([task.score(ex, c) for c in chars]).view(V, V)
    empty = torch.cat([ids, torch.tensor([[M, M]])], 1)
    p0 = torch.softmax(lm(empty, torch.ones_like(empty)), -1)[0, -2:]  # [2, V]
    J = torch.zeros(())
    for i in (0, 1):
        j = 1 - i
        states = torch.full((V, 2), M)
        states[:, i] = toks
        x = torch.cat([ids.expand(V, -1), states], 1)
        p1 = torch.softmax(lm(x, torch.ones_like(x)), -1)[:, -2:][:, j]  # [V(a), V(b)]
        pair = p0[i][:, None] * p1  # [a, b]
        Rij = R if i == 0 else R.T  # R[token at 0, token at 1]
        J = J + 0.5 * (pair * Rij).sum()
    return J


def test_reference_gradient_equals_the_enumerated_exact_gradient():
    torch.manual_seed(0)
    lm = no_mask_model()
    task = TwoChars()
    ex = task.load("train")[0]
    params = [p for p in lm.module.parameters()]
    J = exact_objective(lm, task, ex)
    J.backward()
    exact = -flat_grad(params)  # the loss -J goes downhill along -grad J
    for p in params:
        p.grad = None
    g = reinforce_gradient(lm, task, [ex], 20000, 2, torch.Generator().manual_seed(1), 4096)
    assert cosine(g, exact) > 0.97, cosine(g, exact)
    assert 0.7 < float(g.norm() / exact.norm()) < 1.3


def test_replayed_trajectory_logp_is_the_samplers_own():
    lm = no_mask_model(1)
    task = TwoChars()
    parts = sample_trajectories(lm, task, task.load("train") * 3, 50, 2, torch.Generator().manual_seed(0), 64)
    for pid, pm, comp, commit, _, _, commit_logp in parts:
        with torch.no_grad():
            lp = trajectory_logps(lm, pid, pm, comp, commit, mask_id=lm.mask_id, shrink=1)
        assert torch.allclose(lp, commit_logp, atol=1e-5)


def test_trace_rl_without_clip_is_reinforce_and_converges_to_the_reference():
    """trace_rl at shrink 1, mu 1 has the REINFORCE gradient (z-scored advantages): with enough batches its
    mean gradient reaches cosine ~1 with g*, while a single batch does not."""
    lm = no_mask_model(2)
    task = TwoChars()
    exs = task.load("train")
    ref = reinforce_gradient(lm, task, exs, 20000, 2, torch.Generator().manual_seed(3), 4096)
    cfg = GradcheckConfig(methods=("trace_rl",), group_size=16, batches=256, chunk=4096)
    import dataclasses

    from lfpo_bench.baselines import trace_rl

    orig = trace_rl.TraceRLConfig
    trace_rl.TraceRL.Config = dataclasses.make_dataclass("C", [("shrink", int, 1), ("acc_low", float, 0.0), ("acc_high", float, 1.0)],
                                                         bases=(orig,), frozen=True)
    try:
        st = method_gradients(lm, task, exs, "trace_rl", cfg, ref)
    finally:
        trace_rl.TraceRL.Config = orig
    row = st.row(ref, 0.9)
    assert row["cos_mean"] > 0.9, row
    assert row["cos_batch"] < row["cos_mean"]


def test_a_cached_reference_gives_the_same_result_and_refuses_another_setting(tmp_path):
    """With --ref-cache, a second run skips g* but reproduces every number (the generator state after g* is
    kept, so the REINFORCE row draws the same batches); a cache of another setting is an error, not a reuse."""
    import pytest

    from lfpo_bench.gradcheck import merge_results, run_gradcheck
    from lfpo_bench.types import UserError

    cfg = GradcheckConfig(task="countdown3-mini", model="tiny-random", methods=("diffu_grpo",), prompts=1, batches=2, ref_samples=8)
    cache = tmp_path / "g.ref.pt"
    first = run_gradcheck(cfg, False, ref_cache=cache)
    assert cache.is_file()
    calls = []
    import lfpo_bench.gradcheck as gc

    real = gc.reinforce_gradient

    def counted(*a, **k):
        calls.append(a[3])  # k: trajectories per prompt
        return real(*a, **k)

    gc.reinforce_gradient = counted
    try:
        second = run_gradcheck(cfg, False, ref_cache=cache)
    finally:
        gc.reinforce_gradient = real
    assert cfg.ref_samples // 2 not in calls  # g* came from the file (only the REINFORCE row's batches ran)
    assert second["rows"] == first["rows"] and second["split_half_cos"] == first["split_half_cos"]
    import dataclasses

    for other in (dataclasses.replace(cfg, ref_samples=12), dataclasses.replace(cfg, seed=1)):
        with pytest.raises(UserError, match="another setting"):
            run_gradcheck(other, False, ref_cache=cache)
    # rows of a method added later merge into the earlier result; a re-measured method replaces its row
    more = run_gradcheck(dataclasses.replace(cfg, methods=("wd1", "diffu_grpo")), False, ref_cache=cache)
    merged = merge_results(first, more)
    assert [r["method"] for r in merged["rows"]].count("diffu_grpo") == 1
    assert {r["method"] for r in merged["rows"]} == {"diffu_grpo", "wd1", "reinforce (exact, same batch)"}
    assert merged["config"]["methods"] == ["diffu_grpo", "wd1"]
    with pytest.raises(UserError, match="another setting"):
        merge_results(first, {**more, "config": {**more["config"], "batches": 3}})


def test_table_puts_reinforce_first_orders_by_cosine_and_gives_the_bias_ratio():
    # rel_var 128 over 128 batches: an unbiased estimator reaches 1/sqrt(2), so cos 0.5 is a ratio of 0.5*sqrt(2)
    row = {"method": "m", "batches": 128, "cos_mean": 0.5, "cos_batch": 0.1, "rel_var": 128.0, "cos@128": 0.5}
    assert abs(unbiased_ratio(row) - 0.5 * 2 ** 0.5) < 1e-12
    assert abs(unbiased_ratio({**row, "batches": 32, "rel_var": 96.0}) - 1.0) < 1e-12
    rows = [dict(row, method="low", cos_mean=0.3), dict(row, method="reinforce (exact)", cos_mean=0.2),
            dict(row, method="high", cos_mean=0.9)]
    lines = table({"t-start": {"split_half_cos": 0.99, "rows": rows}}).splitlines()[2:]
    assert [ln.split(" | ")[1] for ln in lines] == ["reinforce (exact)", "high", "low"]
    assert lines[0].startswith("| t-start (0.990) |") and lines[1].startswith("|  | high")
    assert " | 1.27 | " in lines[1]  # 0.9 * sqrt(2)
