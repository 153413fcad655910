"""Contract over every registered method (built-in, entry-point plugin or file plugin): the loss is finite
and differentiable, metrics are floats, equal rewards give no policy-gradient signal, and one update on a
positive-advantage sample raises that sample's likelihood and lowers the method's loss."""

import dataclasses
import textwrap

import pytest
import torch

from lfpo_bench.likelihood import one_step_logps
from lfpo_bench.policies import PolicyBank
from lfpo_bench.registry import METHODS
from lfpo_bench.trainer import Context, accumulate, make_batches, select_groups
from lfpo_bench.types import RolloutBatch

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass
    from lfpo_bench.likelihood import mask_generator, one_step_logps
    from lfpo_bench.method import Method
    from lfpo_bench.types import LossOut

    @dataclass(frozen=True)
    class Cfg:
        mu: int = 1  # iterations

    class Reinforce(Method):
        """REINFORCE on the one-step proxy (a plugin written in one file)."""
        name = "reinforce"
        Config = Cfg

        def loss(self, ctx, mb, state, it, m, chunk=0):
            lp = one_step_logps(ctx.policy, mb.prompt_ids, mb.prompt_mask, mb.completion_ids, mask_id=mb.mask_id,
                                p_mask_prompt=0.0, gen=mask_generator(ctx.mask_seed(it, m)))
            return LossOut(-(mb.advantages[:, None] * lp * mb.completion_mask).sum() / mb.completion_mask.sum(), {})
''')


@pytest.fixture(scope="module")
def plugin_spec(tmp_path_factory):
    p = tmp_path_factory.mktemp("plug") / "reinforce.py"
    p.write_text(PLUGIN)
    return f"{p}:Reinforce"


def all_methods(spec):
    return [n for n in METHODS.names()] + [spec]


def rl_methods(spec):
    return [n for n in all_methods(spec) if getattr(METHODS.get(n), "needs_rollouts", True)]


def batch_for(lm, rewards, G, seed=0):
    """Two-prompt batch whose completions differ in every token; commit steps from a random order."""
    g = torch.Generator().manual_seed(seed)
    N, L = len(rewards), 6
    ids, am = lm.encode_prompts(["12", "345"])
    ids, am = ids.repeat_interleave(G, 0)[:N], am.repeat_interleave(G, 0)[:N]
    completion = torch.stack([torch.tensor(lm.tokenizer.encode("abcdef" if i % 2 == 0 else "uvwxyz")) for i in range(N)])
    commit = torch.stack([torch.randperm(L, generator=g) for _ in range(N)])
    return RolloutBatch(prompt_ids=ids, prompt_mask=am, completion_ids=completion, completion_mask=torch.ones(N, L, dtype=torch.long),
                        commit_step=commit, rewards=torch.tensor(rewards), advantages=torch.zeros(N), group_size=G, steps=L,
                        mask_id=lm.mask_id)


def setup(lm, name, zero_kl=False, **cfg_over):
    cls = METHODS.get(name)
    cfg = cls.Config()
    fields = {f.name for f in dataclasses.fields(cfg)}
    over = {k: v for k, v in {"mu": 1, **cfg_over}.items() if k in fields}
    if zero_kl:
        over.update({k: 0.0 for k in ("kl_beta",) if k in fields})
    method = cls(dataclasses.replace(cfg, **over))
    bank = PolicyBank(lm.module, keep_old=method.uses_old, keep_ref=method.uses_ref)
    return method, Context(policy=lm, bank=bank, seed=0, device=torch.device("cpu"))


def prepared(method, ctx, batch):
    """The trainer's own stages before the inner iterations: group filter and advantages, on_batch, prepare."""
    batch = select_groups(method, batch)
    if batch is None:
        return None
    method.on_batch(batch)
    mbs = make_batches(batch, 2)
    return mbs, [method.prepare(ctx, mb, m) for m, mb in enumerate(mbs)]


def run_loss(method, ctx, batch, it=0):
    p = prepared(method, ctx, batch)
    return (None, {}) if p is None else accumulate(method, ctx, *p, it)


@pytest.fixture
def lm(tiny_random):
    tiny_random.module.train()
    return tiny_random


def test_every_builtin_method_is_registered():
    assert {"lfpo", "diffu_grpo", "wd1", "spg", "coupled_grpo", "espo", "trace_rl", "d2", "map", "sft", "none"} <= set(METHODS.names())


def test_contract_loss_is_finite_differentiable_with_float_metrics(lm, plugin_spec):
    for name in rl_methods(plugin_spec):
        method, ctx = setup(lm, name)
        lm.module.zero_grad()
        loss, metrics = run_loss(method, ctx, batch_for(lm, [1.0, 0.0, 0.5, 0.0], 2))
        assert loss is not None and torch.isfinite(torch.tensor(loss)), name
        grads = [p.grad for p in lm.module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
        assert all(isinstance(v, float) for v in metrics.values()), name


def test_contract_equal_rewards_give_zero_policy_gradient(lm, plugin_spec):
    ran = []
    for name in rl_methods(plugin_spec):
        method, ctx = setup(lm, name, zero_kl=True)
        batch = batch_for(lm, [0.5, 0.5, 1.0, 1.0], 2)
        kept = method.keep_groups(batch.rewards, batch.group_size)
        if not bool(kept.any()):  # the method drops zero-signal groups: the trainer then runs no loss at all
            assert run_loss(method, ctx, batch) == (None, {}), name
            continue
        lm.module.zero_grad()
        loss, _ = run_loss(method, ctx, batch)
        assert loss is not None, f"{name}: kept groups but ran no loss"
        grads = [p.grad for p in lm.module.parameters() if p.grad is not None]
        total = sum(float(g.abs().sum()) for g in grads)
        assert total < 1e-7, f"{name}: gradient {total} with all-equal rewards"
        ran.append(name)
    assert "diffu_grpo" in ran and any(n.endswith(":Reinforce") for n in ran), ran  # the loss itself was checked, not only the filter


def test_contract_one_update_raises_the_positive_samples_likelihood(lm, plugin_spec):
    for name in rl_methods(plugin_spec):
        lm_state = {k: v.clone() for k, v in lm.module.state_dict().items()}
        method, ctx = setup(lm, name, zero_kl=True, a_max=0.25, acc_low=0.0, acc_high=1.0)
        batch = batch_for(lm, [1.0, 0.0, 1.0, 0.0], 2)

        def proxy(batch=batch):
            with torch.no_grad():
                return one_step_logps(lm, batch.prompt_ids[:1], batch.prompt_mask[:1], batch.completion_ids[:1],
                                      mask_id=lm.mask_id, p_mask_prompt=0.0, gen=torch.Generator()).sum().item()

        mbs, states = prepared(method, ctx, batch)  # old/ref quantities fixed before the step, as in training

        def own_loss(method=method, ctx=ctx, mbs=mbs, states=states):
            lm.module.zero_grad()
            return accumulate(method, ctx, mbs, states, 0)[0]

        before_lp, before_loss = proxy(), own_loss()
        opt = torch.optim.SGD(lm.module.parameters(), lr=0.05)
        opt.step()
        after_lp, after_loss = proxy(), own_loss()
        assert after_lp > before_lp, f"{name}: positive sample log-prob {before_lp:.4f} -> {after_lp:.4f}"
        assert after_loss < before_loss, f"{name}: own loss {before_loss:.5f} -> {after_loss:.5f}"
        lm.module.load_state_dict(lm_state)


def test_plugin_from_a_file_runs_through_run(tmp_path, plugin_spec, monkeypatch):
    from lfpo_bench.decoding import DecodingSpec
    from lfpo_bench.evaluate import EvalOptions
    from lfpo_bench.train_job import RunArgs, run

    monkeypatch.chdir(tmp_path)
    res = run(RunArgs(method=plugin_spec, task="sudoku4", model="tiny-random", updates=2, decoding=DecodingSpec(steps=(2,)),
                      opts=EvalOptions(limit=8, batch_size=128),
                      sets=["train.val_limit=8", "train.prompts_per_update=2", "train.group_size=2"], show_progress=False))
    assert [r.stage for r in res.before + res.after] == ["before", "after"]
    assert res.after[0].method == "reinforce" and (res.run_dir / "checkpoint" / "config.json").exists()
    assert len([line for line in (res.run_dir / "log.jsonl").read_text().splitlines()]) == 3  # start + 2 updates
