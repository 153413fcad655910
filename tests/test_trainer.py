"""The trainer: bit-identical resume on CPU, parameter-snapshot policies, group filtering, and that a
short run really changes the policy."""

import dataclasses
import json

import pytest
import torch

from lfpo_bench.decoding import RolloutConfig
from lfpo_bench.models.loader import new_tiny
from lfpo_bench.policies import PolicyBank
from lfpo_bench.registry import METHODS, TASKS
from lfpo_bench.trainer import TrainConfig, Trainer

SMALL = dict(updates=4, prompts_per_update=2, group_size=4, micro_batch=4, val_limit=8, val_every=2, checkpoint_every=2,
             rollout=RolloutConfig(steps=4), lr=1e-3)


def fresh():
    lm = new_tiny(0, d_model=32, n_layers=1, n_heads=2, max_position_embeddings=64)
    lm.module.train()
    return lm


def method(name, **over):
    cls = METHODS.get(name)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    return cls(cls.Config(**{k: v for k, v in {"mu": 2, **over}.items() if k in fields}))


def crash_after_checkpoint(t: Trainer, at: int = 2) -> Trainer:
    """Make ``t.fit()`` die with KeyboardInterrupt when it reaches update ``at`` (after the checkpoint at ``at``)."""
    real_step = t.step

    def step(u):
        if u == at:
            raise KeyboardInterrupt
        return real_step(u)

    t.step = step
    return t


@pytest.mark.parametrize("name", ["lfpo", "diffu_grpo"])
def test_resume_continues_bit_identically(tmp_path, name):
    task = TASKS.get("sudoku4")()
    cfg = TrainConfig(**SMALL)
    straight = fresh()
    Trainer(straight, task, method(name), cfg, tmp_path / "a", show_progress=False).fit()

    interrupted = fresh()
    t = crash_after_checkpoint(Trainer(interrupted, task, method(name), cfg, tmp_path / "b", show_progress=False))
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # a line logged past the checkpoint, then the kill
        f.write(json.dumps({"update": 2, "stage": "lost with the kill"}) + "\n")
    resumed = fresh()
    r = Trainer(resumed, task, method(name), cfg, tmp_path / "b", show_progress=False).fit(resume=True)
    for (n, p), (_, q) in zip(straight.module.named_parameters(), resumed.module.named_parameters()):
        assert torch.equal(p, q), f"{name}: {n} differs after resume"
    assert [e["update"] for e in r.history] == [0, 0, 1, 2, 3]
    logged = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [e["update"] for e in logged] == [0, 0, 1, 2, 3] and all(e.get("stage") != "lost with the kill" for e in logged)
    assert [e.get("loss") for e in logged] == [json.loads(x).get("loss") for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]


def test_a_run_started_over_logs_its_curve_once(tmp_path):
    """A run folder whose earlier attempt left a log but no checkpoint (killed before its first one, or moved
    without its weights): the restart's log.jsonl is its own history, not the old lines followed by it."""
    task = TASKS.get("sudoku4")()
    cfg = TrainConfig(**SMALL)
    run = tmp_path / "r"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps({"update": 0, "stage": "start"}) + "\n" + json.dumps({"update": 0, "loss": 9.0}) + "\n")
    r = Trainer(fresh(), task, method("lfpo"), cfg, run, show_progress=False).fit(resume=True)
    logged = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [e["update"] for e in logged] == [e["update"] for e in r.history] == [0, 0, 1, 2, 3]
    assert all(e.get("loss") != 9.0 for e in logged)


class NoisyReward(TASKS.get("sudoku4")):
    """A random model scores 0 everywhere; give the trainer a reward with signal instead."""

    def score_batch(self, examples, completions):
        from lfpo_bench.task import Scored

        return [Scored(float(sum(map(ord, c)) % 3) / 2, {}) for c in completions]


def test_training_changes_the_policy_and_logs_each_update(tmp_path):
    lm = fresh()
    before = [p.clone() for p in lm.parameters()]
    res = Trainer(lm, NoisyReward(), method("diffu_grpo", kl_beta=0.0), TrainConfig(**SMALL, ), tmp_path,
                  show_progress=False).fit()
    assert any(not torch.equal(a, b) for a, b in zip(before, lm.parameters()))
    entries = [e for e in res.history if "reward_mean" in e]
    assert len(entries) == 4
    for e in entries:
        assert 0 <= e["reward_mean"] <= 1 and 0 <= e["zero_signal"] <= 1 and e["samples_per_s"] > 0
        assert e["fwd_rows"] > 0 and e["bwd_rows"] > 0
    assert (tmp_path / "log.jsonl").read_text().count("\n") == len(res.history)


def test_policy_bank_swaps_and_restores_and_ema_moves_towards_current():
    lm = fresh()
    bank = PolicyBank(lm.module, keep_old=True, keep_ref=True)
    w = next(lm.module.parameters())
    start = w.detach().clone()
    with torch.no_grad():
        w.add_(1.0)
    with bank.use("ref"):
        assert torch.equal(w, start)
    assert torch.equal(w, start + 1.0)
    bank.ema_update(0.75)
    assert torch.allclose(bank.snapshots["old"][0], start + 0.25)
    with pytest.raises(KeyError):
        PolicyBank(lm.module, keep_old=False, keep_ref=False).use("old").__enter__()


def test_swapping_while_a_graph_is_alive_fails_loudly():
    lm = fresh()
    bank = PolicyBank(lm.module, keep_old=True, keep_ref=False)
    out = lm(torch.tensor([[5, 6, 7]])).sum()
    with bank.use("old"):
        pass
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_lfpo_skips_groups_with_equal_rewards(tmp_path):
    m = method("lfpo")
    r = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert m.keep_groups(r, 4).tolist() == [False, True]
    assert method("lfpo", skip_zero_signal=False).keep_groups(r, 4).tolist() == [True, True]


def test_rollouts_sample_in_eval_mode_and_updates_run_in_train_mode(tmp_path, monkeypatch):
    """Dropout (LoRA's 0.05 on real models) must not perturb the policy that rollouts sample from."""
    import lfpo_bench.trainer as trainer_mod

    lm = fresh()
    seen = {"rollout": [], "loss": []}
    real_generate = trainer_mod.generate

    def spy_generate(model, *a, **k):
        seen["rollout"].append(model.module.training)
        return real_generate(model, *a, **k)

    monkeypatch.setattr(trainer_mod, "generate", spy_generate)
    m = method("diffu_grpo", kl_beta=0.0)
    real_loss = m.loss

    def spy_loss(ctx, *a, **k):
        seen["loss"].append(ctx.policy.module.training)
        return real_loss(ctx, *a, **k)

    m.loss = spy_loss
    Trainer(lm, NoisyReward(), m, TrainConfig(**{**SMALL, "updates": 2, "val_every": 0}), tmp_path, show_progress=False).fit()
    assert seen["rollout"] and not any(seen["rollout"])
    assert seen["loss"] and all(seen["loss"])


def test_lora_training_with_dropout_reruns_identically(tmp_path):
    """LoRA dropout draws from the global RNG; the trainer seeds it per update, so two runs with the same
    seed agree even when the global RNG was left in different states before them."""
    pytest.importorskip("peft", reason="LoRA needs the `dist` extra: pip install 'lfpo-bench[dist]'")
    from lfpo_bench.models.adapters import prepare_for_training

    cfg = TrainConfig(**{**SMALL, "updates": 2, "val_every": 0, "checkpoint_every": 0, "lora_r": 4, "lora_dropout": 0.5})

    def train(garbage: int):
        torch.rand(garbage)  # leave the global RNG somewhere else
        lm = fresh()
        prepare_for_training(lm, cfg)
        Trainer(lm, NoisyReward(), method("diffu_grpo", kl_beta=0.0), cfg, tmp_path / str(garbage), show_progress=False).fit()
        return {n: p.detach().clone() for n, p in lm.module.named_parameters() if p.requires_grad}

    a, b = train(1), train(7)
    start = fresh()
    prepare_for_training(start, cfg)
    init = {n: p.detach() for n, p in start.module.named_parameters() if p.requires_grad}
    assert any(not torch.equal(a[k], init[k]) for k in a)  # training moved the adapters
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("kind", ["tensorboard", "wandb"])
def test_trackers_receive_every_logged_update_offline(tmp_path, monkeypatch, kind):
    """--report-to: the numeric fields of each log.jsonl entry reach the tracker at step = update, offline."""
    pytest.importorskip(kind, reason=f"--report-to {kind} needs the `track` extra: pip install 'lfpo-bench[track]'")
    import json

    from lfpo_bench.trackers import make_trackers

    monkeypatch.setenv("WANDB_MODE", "offline")
    trackers = make_trackers(kind, tmp_path, {"lr": 1e-3}, "t")
    Trainer(fresh(), NoisyReward(), method("diffu_grpo", kl_beta=0.0), TrainConfig(**{**SMALL, "updates": 3}), tmp_path,
            show_progress=False, trackers=trackers).fit()
    for t in trackers:
        t.finish()
    logged = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    want = [(e["update"], e["reward_mean"]) for e in logged if "reward_mean" in e]
    assert len(want) == 3
    if kind == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(tmp_path / "tensorboard"))
        acc.Reload()
        got = [(ev.step, ev.value) for ev in acc.Scalars("reward_mean")]
        assert [s for s, _ in got] == [u for u, _ in want]
        assert [v for _, v in got] == pytest.approx([r for _, r in want], rel=1e-6)
    else:
        import re

        (record,) = (tmp_path / "wandb").glob("offline-run-*/*.wandb")  # one offline run, nothing synced
        data = record.read_bytes()
        # history and summary items are (key, JSON value) protobuf fields: every logged value, in order
        got = iter(float(data[m.end() + 1: m.end() + 1 + data[m.end()]]) for m in re.finditer(rb"reward_mean\x82\x01", data))
        assert all(any(abs(g - r) < 1e-9 for g in got) for _, r in want), "a logged reward is missing or out of order"


def test_unknown_tracker_is_refused_before_any_work():
    from lfpo_bench.trackers import check_report_to
    from lfpo_bench.types import UserError

    with pytest.raises(UserError, match="unknown tracker"):
        check_report_to("tensorbord")


class EqualReward(TASKS.get("sudoku4")):
    """Every completion scores the same: no group carries signal."""

    def score_batch(self, examples, completions):
        from lfpo_bench.task import Scored

        return [Scored(0.5, {}) for _ in completions]


def test_a_no_signal_update_is_logged_as_skipped_and_still_advances_the_schedule(tmp_path):
    cfg = TrainConfig(**{**SMALL, "updates": 3, "val_every": 0, "lr_schedule": "cosine"})
    m = method("lfpo")  # drops groups without signal (skip_zero_signal)
    tr = Trainer(fresh(), EqualReward(), m, cfg, tmp_path, show_progress=False)
    before = [p.detach().clone() for _, p in tr.bank.params]
    entries = [tr.step(u) for u in range(3)]
    for e in entries:
        assert e["skipped"] is True and e["loss"] is None and e["opt_steps"] == 0 and e["bwd_passes"] == 0
    assert all(torch.equal(a, p) for a, (_, p) in zip(before, tr.bank.params))
    # 3 updates x mu=2 scheduled steps: the cosine schedule stands where training would have put it
    assert tr.sched.last_epoch == 3 * m.mu
    assert entries[-1]["lr"] == pytest.approx(cfg.lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 6 / 6)).item()), abs=1e-12)


def test_passes_and_optimiser_steps_are_counted_not_derived(tmp_path):
    cfg = TrainConfig(**{**SMALL, "updates": 1, "val_every": 0, "micro_batch": 2})
    m = method("diffu_grpo", kl_beta=0.0)
    tr = Trainer(fresh(), NoisyReward(), m, cfg, tmp_path, show_progress=False)
    calls = {"fwd": 0, "bwd": 0}
    tr.lm.module.register_forward_hook(lambda mod, a, o: calls.__setitem__("fwd", calls["fwd"] + 1))
    ro = tr.roll_out(0, *tr.sample_prompts(0))
    rollout_calls = calls["fwd"]
    assert rollout_calls > 0
    calls["fwd"] = 0
    tr.counter.reset()
    prep = tr.prepare_micro_batches(ro)
    assert prep is not None
    for it in range(m.mu):
        tr.backward_pass(prep, it)
        tr.optimizer_step()
    assert tr.counter.grad_calls > 0 and tr.counter.grad_calls + tr.counter.nograd_calls == calls["fwd"]
    e = Trainer(fresh(), NoisyReward(), m, cfg, tmp_path / "b", show_progress=False).step(0)
    assert not e.get("skipped")  # diffu-GRPO trains on every group
    assert e["opt_steps"] == m.mu and e["rollout_fwd"] == rollout_calls
    assert e["bwd_passes"] == tr.counter.grad_calls and e["fwd_passes"] == calls["fwd"]


def test_the_evaluated_policy_is_a_knob_and_refused_where_there_is_none(tmp_path):
    from lfpo_bench.types import UserError

    cfg = TrainConfig(**{**SMALL, "updates": 2, "val_every": 1, "eval_policy": "old"})
    with pytest.raises(UserError, match="eval_policy=old.*keeps no old/EMA policy"):
        Trainer(fresh(), NoisyReward(), method("diffu_grpo", kl_beta=0.0), cfg, tmp_path / "a", show_progress=False)
    with pytest.raises(ValueError, match="eval_policy"):
        TrainConfig(eval_policy="ema")
    m = method("lfpo", ema=0.9, mu=1)
    tr = Trainer(fresh(), NoisyReward(), m, cfg, tmp_path / "b", show_progress=False)
    res = tr.fit()
    current = {n: p.detach() for n, p in tr.bank.params}
    old = dict(zip([n for n, _ in tr.bank.params], tr.bank.snapshots["old"]))
    assert any(not torch.equal(current[n], old[n]) for n in current)  # EMA lags: the two policies differ
    assert all(torch.equal(res.last[n], old[n]) for n in old)  # what is evaluated is the EMA policy
    assert res.last_update == 2


def test_a_run_writes_selected_and_last_rows_with_its_counted_budget(tmp_path, monkeypatch):
    from lfpo_bench.decoding import DecodingSpec
    from lfpo_bench.evaluate import EvalOptions
    from lfpo_bench.train_job import RunArgs, run

    monkeypatch.chdir(tmp_path)
    res = run(RunArgs(method="diffu_grpo", task="sudoku4", model="tiny-random", updates=2, decoding=DecodingSpec(steps=(2,)),
                      opts=EvalOptions(limit=8, batch_size=64), show_progress=False,
                      sets=["train.val_limit=8", "train.prompts_per_update=2", "train.group_size=2", "mu=2"]))
    assert [r.stage for r in res.last] == ["last"] and res.last[0].checkpoint == "last-update"
    if res.best_update == 2:  # the selected checkpoint is the last one: the same scores
        assert res.last[0].scores == res.after[0].scores
    budget = res.after[0].config["budget"]
    log = [e for e in res.history if e.get("stage") != "start"]
    assert budget["opt_steps"] == sum(e["opt_steps"] for e in log) == 2 * 2 - 2 * budget["skipped_updates"]
    assert budget["backwards"] == sum(e["bwd_passes"] for e in log) and budget["rollout_forwards"] > 0


@pytest.mark.parametrize("metric, best", [("accuracy", 2), ("solved", 4)])
def test_validation_selects_on_train_val_metric(tmp_path, monkeypatch, metric, best):
    """Validation scores (and selects) under train.val_metric: here the task score peaks at update 2, the
    solved rate at update 4. A metric the task does not report is refused with the names it has."""
    import types

    import lfpo_bench.trainer as trainer_mod
    from lfpo_bench.types import UserError

    seq = iter([(0.5, 0.1), (0.9, 0.2), (0.6, 0.7)])  # (accuracy, solved) at updates 0, 2, 4

    def fake_evaluate(*a, **k):
        acc, solved = next(seq)
        return [types.SimpleNamespace(accuracy=acc, metrics={"solved": solved})]

    monkeypatch.setattr(trainer_mod, "evaluate", fake_evaluate)
    cfg = TrainConfig(**{**SMALL, "val_metric": metric})
    r = Trainer(fresh(), NoisyReward(), method("diffu_grpo", kl_beta=0.0), cfg, tmp_path, show_progress=False).fit()
    assert r.best_update == best
    seq = iter([(0.5, 0.1)])
    with pytest.raises(UserError, match="'solve'.*did you mean 'solved'.*it has: accuracy, solved"):
        Trainer(fresh(), NoisyReward(), method("diffu_grpo", kl_beta=0.0), TrainConfig(**{**SMALL, "val_metric": "solve"}),
                tmp_path / "bad", show_progress=False).fit()
