"""lfpo-bench tune: equal trial counts, selection on validation only, the chosen configs in the final sweep,
resumable; and the shared rollout decoding."""

import json

import pytest
import yaml

from lfpo_bench.results import read_rows
from lfpo_bench.tune import choose, plan
from lfpo_bench.types import UserError

SPEC = {"name": "t", "methods": ["none", "lfpo", "diffu_grpo"], "tasks": ["sudoku4"], "models": ["tiny-random"],
        "train": {"updates": 1, "prompts_per_update": 2, "group_size": 2, "val_limit": 4, "val_every": 0},
        "tune": {"trials": 2, "seed": 0, "limit": 6, "grid": {"default": {"train.lr": [1e-4, 3e-4]},
                                                              "diffu_grpo": {"method.mu": [1, 2]}}},
        "final": {"seeds": [0, 1], "eval": {"steps": [1, 2], "limit": 6}, "timing": {"reps": 0}}}


def test_every_training_method_gets_the_same_number_of_trials():
    trials = plan(SPEC, "t")
    assert {m: len(p) for m, p in trials.items()} == {"none": 1, "lfpo": 2, "diffu_grpo": 2}
    assert trials["diffu_grpo"] == [({}, {"mu": 1}), ({}, {"mu": 2})]
    assert trials["lfpo"] == [({"lr": 1e-4}, {}), ({"lr": 3e-4}, {})]
    uneven = {**SPEC, "tune": {**SPEC["tune"], "grid": {"default": {"train.lr": [1e-4, 3e-4]},
                                                         "diffu_grpo": {"method.mu": [1, 2, 4]}}}}
    with pytest.raises(UserError, match="'diffu_grpo' has 3 trial.*tune.trials is 2"):
        plan(uneven, "t")


def test_a_method_may_tune_its_own_knobs_as_a_list_of_points_on_the_same_budget():
    grid = {"default": {"train.lr": [1e-4, 3e-4]},
            "diffu_grpo": [{"train.lr": 1e-5, "method.mu": 4}, {"method.beta": 0.0}]}
    trials = plan({**SPEC, "tune": {**SPEC["tune"], "grid": grid}}, "t")
    assert trials["diffu_grpo"] == [({"lr": 1e-5}, {"mu": 4}), ({}, {"beta": 0.0})]
    three = {**grid, "diffu_grpo": grid["diffu_grpo"] + [{"train.lr": 1e-3}]}
    with pytest.raises(UserError, match="'diffu_grpo' has 3 trial"):
        plan({**SPEC, "tune": {**SPEC["tune"], "grid": three}}, "t")
    for bad in ([{"train.lr": [1e-5, 1e-4]}, {}], [3e-4, 1e-4], "lr"):
        with pytest.raises(UserError, match=r"tune.grid.diffu_grpo"):
            plan({**SPEC, "tune": {**SPEC["tune"], "grid": {**grid, "diffu_grpo": bad}}}, "t")


@pytest.mark.parametrize("tune, msg", [({"trials": 0}, "positive integer"), ({"trials": 2, "budget": 1}, "unknown tune key"),
                                       ({"trials": 1, "grid": {"default": {"lr": [1e-4]}}}, "train.<field> or method.<field>"),
                                       ({"trials": 1, "grid": {"wd1": {"train.lr": [1e-4]}}}, "not in methods"),
                                       ({"trials": 2, "extend_edges": 1, "grid": {"default": {"method.remasking": ["random", "low_confidence"]}}},
                                        "no numeric knob")])
def test_bad_tune_sections_are_named(tune, msg):
    with pytest.raises(UserError, match=msg):
        plan({**SPEC, "tune": tune}, "t")


def test_choice_is_the_best_validation_score_ties_to_the_earlier_trial():
    trials = {"a": [({"lr": 1}, {}), ({"lr": 2}, {}), ({"lr": 3}, {})], "b": [({}, {"mu": 1}), ({}, {"mu": 2})]}
    recs = [{"method": "a", "trial": i, "train_cfg": {"lr": i + 1, "updates": 5}, "method_cfg": {}, "val_accuracy": v}
            for i, v in enumerate([0.5, 0.7, 0.7])]
    recs.append({"method": "b", "trial": 0, "train_cfg": {}, "method_cfg": {"mu": 1}, "val_accuracy": 0.9})
    chosen = choose(recs, trials, {"updates": 5})
    assert chosen["a"]["trial"] == 1 and chosen["a"]["tuned_train"] == {"lr": 2}  # shared settings are not "tuned"
    assert "b" not in chosen  # one of its two trials is missing: no choice yet
    # a rerun reads the records of extension trials that an earlier run added (trial 3 of a, the best): the choice
    # over the grid alone is the one that made that extension, whatever the extension scored
    recs.append({"method": "a", "trial": 3, "train_cfg": {"lr": 4, "updates": 5}, "method_cfg": {}, "val_accuracy": 0.99})
    assert choose(recs, trials, {"updates": 5})["a"]["trial"] == 1
    grown = {**trials, "a": trials["a"] + [({"lr": 4}, {})]}
    assert choose(recs, grown, {"updates": 5})["a"]["trial"] == 3


def test_the_tuning_table_flags_a_choice_past_which_a_grid_could_go_and_not_a_count_at_its_floor():
    from lfpo_bench.tune import tuning_table

    pts = [({"lr": lr}, {"mu": mu, "tau": tau}) for lr, mu, tau in
           [(1e-5, 2, 1.0), (3e-5, 2, 1.0), (1e-4, 2, 1.0), (3e-5, 1, 1.0), (3e-5, 4, 1.0), (3e-5, 2, 0.5), (3e-5, 2, 2.0)]]

    def flag(i):  # the chosen cell of a table where trial i won
        recs = [{"method": "m", "trial": j, "train_cfg": {"lr": t["lr"], "updates": 5}, "method_cfg": m,
                 "val_accuracy": 0.9 if j == i else 0.1, "selected_updates": [5]} for j, (t, m) in enumerate(pts)]
        row = [r for r in tuning_table(recs, {"m": {"trial": i}}, {"m": pts}).splitlines() if r.startswith(f"| m | {i} |")]
        return row[0].rsplit("|", 2)[-2].strip()

    assert flag(1) == "yes"  # inside every knob's values
    assert flag(0) == "yes (on the grid's edge: train.lr at the bottom)"
    assert flag(6) == "yes (on the grid's edge: method.tau at the top)"
    # mu=1 cannot go lower: no grid could move past it, so it is no edge to flag
    assert flag(3) == "yes (method.mu at its floor)"
    # a float knob at its smallest value is an edge (0.25 could be tried), whatever its value
    assert flag(5) == "yes (on the grid's edge: method.tau at the bottom)"


def test_tune_runs_both_phases_and_resumes(tmp_path, monkeypatch):
    from lfpo_bench.tune import tune

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(SPEC))
    out, chosen, recs = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False)
    assert sorted((r["method"], r["trial"]) for r in recs) == [("diffu_grpo", 0), ("diffu_grpo", 1), ("lfpo", 0), ("lfpo", 1),
                                                                ("none", 0)]
    val_rows = [r for f in (out / "tune").glob("trial*/rows.jsonl") for r in read_rows(f)]
    assert {r["split"] for r in val_rows} == {"validation"}  # tuning never touches the test split
    table = (out / "tuning.md").read_text()
    assert table.count("| yes") == 3 and "on the grid's edge" in table  # two-point grids: every choice is on an edge
    shared_line = table.splitlines()[0]  # the protocol's shared settings once; each row only what its trial tuned
    assert shared_line.startswith("every trial: ") and "train.updates=1" in shared_line and "train.lr" not in shared_line
    assert "| lfpo | 1 | train.lr=0.0003 |" in table or "| lfpo | 1 | train.lr=3e-4 |" in table
    by_run = {(r["method"], r["train_cfg"].get("lr"), r["method_cfg"].get("mu")): r["config"].get("selected_update") for r in val_rows}
    for r in recs:  # each trial says which checkpoint its validation kept, so a row that is its start shows
        want = by_run[(r["method"], r["train_cfg"].get("lr"), r["method_cfg"].get("mu"))]
        assert r["selected_updates"] == ([] if want is None else [want])
        if want == 0 and r["method"] != "none":
            assert f"| {r['method']} | {r['trial']} |" in table and "0 (its start)" in table
    final = read_rows(out / "final" / "rows.jsonl")
    assert {r["split"] for r in final} == {"test"}
    assert sorted({(r["method"], r["seed"]) for r in final}) == [(m, s) for m in ("diffu_grpo", "lfpo", "none") for s in (0, 1)]
    for r in final:
        c = chosen[r["method"]]
        assert r["method_cfg"] == c["method_cfg"]
        assert all(r["train_cfg"][k] == v for k, v in c["tuned_train"].items())
    from lfpo_bench.report import load_rows, method_label

    labels = {method_label(r) for _, r in load_rows([out / "final"]).iterrows()}
    want_lfpo = "lfpo[" + f"train.lr={chosen['lfpo']['tuned_train']['lr']}" + "]"
    assert want_lfpo in labels and "none" in labels  # each row names its method's chosen configuration
    took: dict = {}  # trial 1 starts the method that was dearest in trial 0; the final phase, by the mean of all trials
    for i in (0, 1):
        for rec in read_rows(out / "tune" / f"trial{i}" / "cells.jsonl"):
            took.setdefault(rec["label"].split("[")[0].split("/")[0], []).append(rec["seconds"])
        if i == 0:
            dear = sorted(["lfpo", "diffu_grpo"], key=lambda m: -took[m][0])
            assert yaml.safe_load((out / "tune" / "trial1.yaml").read_text())["methods"] == dear
    mean = {m: sum(v) / len(v) for m, v in took.items()}
    assert yaml.safe_load((out / "final.yaml").read_text())["methods"] == sorted(mean, key=lambda m: -mean[m])
    cells = [len(read_rows(f)) for f in sorted(out.rglob("cells.jsonl"))]
    tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False)
    assert [len(read_rows(f)) for f in sorted(out.rglob("cells.jsonl"))] == cells, "a finished tune reran cells"
    assert json.loads((out / "tuning.jsonl").read_text().splitlines()[0])["method"]


def test_shared_rollout_decoding_overrides_each_methods_preference(monkeypatch):
    from lfpo_bench.decoding import RolloutConfig
    from lfpo_bench.registry import METHODS
    from lfpo_bench.trainer import TrainConfig

    lfpo = METHODS.get("lfpo")(METHODS.get("lfpo").Config())
    # the default is the shared rule (evaluation's remasking, sampled at 0.9), not LFPO's random remasking at T=1
    assert TrainConfig().rollout.rule(lfpo) == (0.9, "low_confidence") != (lfpo.cfg.temperature, lfpo.cfg.remasking)
    assert RolloutConfig(decoding="method").rule(lfpo) == (lfpo.cfg.temperature, lfpo.cfg.remasking)
    shared = RolloutConfig(decoding="shared", temperature=0.7, remasking="low_confidence")
    assert shared.rule(lfpo) == (0.7, "low_confidence")
    with pytest.raises(ValueError, match="rollout.decoding"):
        RolloutConfig(decoding="mine")


def test_grid_edges_and_their_extension():
    from lfpo_bench.tune import beyond, edges_of, extension

    pts = [({"lr": lr}, {"mu": mu}) for lr in (1e-5, 1e-4) for mu in (1, 2, 4)]
    assert edges_of(pts, ({"lr": 1e-4}, {"mu": 2})) == [("train.lr", "top")]
    assert sorted(edges_of(pts, ({"lr": 1e-5}, {"mu": 4}))) == [("method.mu", "top"), ("train.lr", "bottom")]
    assert beyond([1e-5, 1e-4], "top") == pytest.approx(1e-3) and beyond([1e-5, 1e-4], "bottom") == pytest.approx(1e-6)
    assert beyond([1, 2, 4], "top") == 8 and beyond([1, 2, 4], "bottom") is None  # a count never falls below 1
    assert beyond([0.0, 0.5], "top") == 1.0 and beyond([0.0, 0.5], "bottom") == -0.5
    assert extension(pts, ({"lr": 1e-4}, {"mu": 2})) == ({"lr": pytest.approx(1e-3)}, {"mu": 2})
    # mu=1 is at the bottom, which cannot go lower: the next edge knob moves instead
    assert extension(pts, ({"lr": 1e-5}, {"mu": 1})) == ({"lr": pytest.approx(1e-6)}, {"mu": 1})
    # a choice inside its grid still gets its one trial (equal budgets): past the nearest edge
    inner = [({"lr": v}, {}) for v in (1e-5, 3e-5, 1e-4, 3e-4)]
    assert extension(inner, inner[2]) == ({"lr": pytest.approx(9e-4)}, {})  # the last step (x3) repeated
    assert extension([({}, {})], ({}, {})) is None
    # only a count, chosen at 1: it cannot go lower, so the one more trial goes past the far edge (equal budgets)
    counts = [({"lr": 1e-4}, {"mu": 1}), ({"lr": 1e-4}, {"mu": 4})]
    assert extension(counts, counts[0]) == ({"lr": 1e-4}, {"mu": 16})


def test_tuning_scores_each_trial_on_its_last_update_and_extends_edges_for_every_method(tmp_path, monkeypatch):
    from lfpo_bench.tune import tune

    monkeypatch.chdir(tmp_path)
    spec = {**SPEC, "methods": ["none", "lfpo"],
            "tune": {**SPEC["tune"], "grid": {"default": {"train.lr": [1e-4, 3e-4]}}, "extend_edges": True},
            "final": {"seeds": [0], "eval": {"steps": [2], "limit": 4}, "timing": {"reps": 0}}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    out, chosen, recs = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False)
    lfpo = sorted((r["trial"], r["train_cfg"]["lr"]) for r in recs if r["method"] == "lfpo")
    assert [t for t, _ in lfpo] == [0, 1, 2] and lfpo[2][1] not in (1e-4, 3e-4)  # one trial past the chosen edge
    assert len([r for r in recs if r["method"] == "none"]) == 1
    for r in recs:
        rows = [x for x in read_rows(out / "tune" / f"trial{r['trial']}" / "rows.jsonl") if x["method"] == r["method"]]
        want = "last" if r["method"] == "lfpo" else "after"
        scored = [x["accuracy"] for x in rows if x.get("stage") == want]
        assert scored and r["val_accuracy"] == pytest.approx(sum(scored) / len(scored))
    table = (out / "tuning.md").read_text()
    assert "last update" in table
    # rerun on the finished folder (as a resumed or split run does): the same records and choice, no cell run again
    cells = {f: f.read_text() for f in sorted(out.rglob("cells.jsonl"))}
    _, chosen2, recs2 = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False)
    assert (chosen2, recs2) == (chosen, recs)
    assert {f: f.read_text() for f in sorted(out.rglob("cells.jsonl"))} == cells
    with pytest.raises(UserError, match="extend_edges"):
        plan({**SPEC, "tune": {**SPEC["tune"], "extend_edges": -1}}, "t")


def test_a_protocol_metric_scores_the_trials_and_a_wrong_name_is_refused(tmp_path):
    """train.val_metric ("solved") is what tuning compares; the task score would choose the other trial."""
    from lfpo_bench.tune import scores, tuning_table

    def row(method, acc, solved, lr):
        return json.dumps({"method": method, "stage": "last", "accuracy": acc, "metrics": {"solved": solved},
                           "method_cfg": {}, "train_cfg": {"lr": lr}, "config": {"selected_update": 2}})

    for i, (acc, solved) in enumerate([(0.9, 0.2), (0.8, 0.5)]):
        d = tmp_path / "tune" / f"trial{i}"
        d.mkdir(parents=True)
        (d / "rows.jsonl").write_text(row("lfpo", acc, solved, 10.0 ** -(i + 4)) + "\n")
    trials = {"lfpo": [({"lr": 1e-4}, {}), ({"lr": 1e-5}, {})]}
    by_acc = choose(scores(tmp_path), trials, {})
    by_solved = choose(recs := scores(tmp_path, "solved"), trials, {})
    assert by_acc["lfpo"]["trial"] == 0 and by_solved["lfpo"]["trial"] == 1
    assert by_solved["lfpo"]["val_accuracy"] == pytest.approx(0.5)
    assert "validation solved (last update)" in tuning_table(recs, by_solved, trials)
    with pytest.raises(UserError, match=r"'solvd'.*did you mean 'solved'.*train.val_metric"):
        scores(tmp_path, "solvd")


def test_trial_records_do_not_depend_on_the_order_cells_finished(tmp_path):
    """A trial's rows are appended as its cells finish (launcher, workers, timing decide that order): the
    records, and so tuning.jsonl, come in the protocol's method order whatever order the rows were written in."""
    import random

    from lfpo_bench.tune import scores

    def row(method, stage, acc, mcfg, lr):
        return {"method": method, "stage": stage, "accuracy": acc, "method_cfg": mcfg, "train_cfg": {"lr": lr},
                "config": {"selected_update": 1}}

    rows = {0: [row("none", "after", 0.3, {}, 0.0), row("lfpo", "last", 0.5, {}, 1e-4),
                row("diffu_grpo", "last", 0.4, {"mu": 1}, 1e-4), row("MyRL", "last", 0.2, {}, 1e-4)],
            1: [row("lfpo", "last", 0.6, {}, 3e-4), row("diffu_grpo", "last", 0.1, {"mu": 2}, 1e-4),
                row("MyRL", "last", 0.7, {}, 3e-4)]}
    names = {"none": "none", "MyRL": "plug.py:MyRL", "lfpo": "lfpo", "diffu_grpo": "diffu_grpo"}  # protocol order
    seen = []
    for shuffle_seed in range(6):
        rng = random.Random(shuffle_seed)
        for i, rs in rows.items():
            d = tmp_path / str(shuffle_seed) / "tune" / f"trial{i}"
            d.mkdir(parents=True)
            rs = list(rs)
            rng.shuffle(rs)
            (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
        seen.append(scores(tmp_path / str(shuffle_seed), names=names))
    assert all(s == seen[0] for s in seen)
    assert [(r["trial"], r["method"]) for r in seen[0]] == [
        (0, "none"), (0, "plug.py:MyRL"), (0, "lfpo"), (0, "diffu_grpo"),
        (1, "plug.py:MyRL"), (1, "lfpo"), (1, "diffu_grpo")]


def test_trials_and_the_final_phase_start_their_dearest_methods_first():
    """Longest-processing-time first: measured means, highest first; unmeasured methods lead (they may be
    long); ties keep grid order; the cells are the same ones."""
    from lfpo_bench.sweep import expand
    from lfpo_bench.tune import longest_first

    s = {"name": "x", "methods": ["none", "lfpo", "diffu_grpo", "wd1", "spg"], "tasks": ["sudoku4"], "seeds": [0]}
    cost = {"none": [5.0], "lfpo": [100.0, 300.0], "diffu_grpo": [250.0], "wd1": [200.0]}
    out = longest_first(s, cost)
    assert out["methods"] == ["spg", "diffu_grpo", "lfpo", "wd1", "none"]  # spg unmeasured; lfpo's mean is 200 = wd1's
    assert s["methods"][0] == "none"  # the input is not changed
    assert {c.id for c in expand(out)} == {c.id for c in expand(s)}


FLAKY = '''
import os
from lfpo_bench.registry import METHODS

Base = METHODS.get("diffu_grpo")


class Flaky(Base):
    def loss(self, *args, **kwargs):
        if os.path.exists(os.environ["FLAKY_MARKER"]):
            raise RuntimeError("flaky: the marker file is there")
        return super().loss(*args, **kwargs)
'''


def test_a_failed_trial_stops_tuning_with_the_fix_and_retry_failed_reruns_it(tmp_path, monkeypatch):
    from lfpo_bench.tune import tune

    monkeypatch.chdir(tmp_path)
    (tmp_path / "flaky.py").write_text(FLAKY)
    marker = tmp_path / "marker"
    marker.write_text("x")
    monkeypatch.setenv("FLAKY_MARKER", str(marker))
    m = f"{tmp_path / 'flaky.py'}:Flaky"
    spec = {**SPEC, "methods": ["none", m], "tune": {**SPEC["tune"], "grid": {"default": {"train.lr": [1e-4, 3e-4]}}},
            "final": {"seeds": [0], "eval": {"steps": [2], "limit": 4}, "timing": {"reps": 0}}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match="retry-failed"):
        tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False)
    assert not (tmp_path / "out" / "final").exists()
    marker.unlink()  # the cause is fixed
    with pytest.raises(UserError, match="did not finish"):  # a plain rerun does not retry a recorded failure
        tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False)
    out, chosen, recs = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False, retry_failed=True)
    assert len(chosen) == 2 and len([r for r in recs if r["method"] != "none"]) == 2
    assert read_rows(out / "final" / "rows.jsonl")


def test_tuning_only_stops_before_the_final_phase_and_the_plain_rerun_runs_only_it(tmp_path, monkeypatch):
    """--tuning-only: the trials and the choice, no final cell; the same call without it then runs the final phase
    and no trial again (a tuning on one machine or session, the finals where their weights stay)."""
    from lfpo_bench.tune import tune

    monkeypatch.chdir(tmp_path)
    spec = {**SPEC, "methods": ["none", "lfpo"], "final": {**SPEC["final"], "seeds": [0]},
            "tune": {**SPEC["tune"], "grid": {"default": SPEC["tune"]["grid"]["default"]}}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    out, chosen, _ = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False, tuning_only=True)
    assert sorted(chosen) == ["lfpo", "none"] and (out / "tuning.md").exists()
    assert json.loads((out / "final" / "chosen.json").read_text()).keys() == {"lfpo", "none"}  # what the ablation reads
    assert not (out / "final" / "cells.jsonl").exists() and not (out / "final" / "rows.jsonl").exists()
    trial_cells = {f: f.read_text() for f in sorted((out / "tune").rglob("cells.jsonl"))}
    out2, chosen2, _ = tune(str(tmp_path / "t.yaml"), out=str(tmp_path / "out"), show_progress=False)
    assert chosen2 == chosen
    assert {f: f.read_text() for f in sorted((out / "tune").rglob("cells.jsonl"))} == trial_cells  # no trial reran
    final = read_rows(out / "final" / "rows.jsonl")
    assert sorted({r["method"] for r in final}) == ["lfpo", "none"] and {r["split"] for r in final} == {"test"}
