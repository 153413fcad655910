"""Reporting on fixture rows: bootstrap CI against a known case, paired tests by hand, tables, the
equal-accuracy view, provenance checks and plots."""

import math

import numpy as np
import pytest

from lfpo_bench import report
from lfpo_bench.types import UserError


def row(method, steps, scores, seed=0, decoding="fixed", nfe=None, sha="abc", data="d1", task="t"):
    n = len(scores)
    return {"method": method, "task": task, "model": "m", "split": "test", "gen_length": 16, "steps": steps, "block_length": 16,
            "decoding": decoding, "temperature": 0.0, "remasking": "low_confidence", "seed": seed, "n": n,
            "accuracy": float(np.mean(scores)), "nfe_mean": float(nfe if nfe is not None else steps), "latency_ms_p50": steps * 0.5,
            "latency_ms_p95": steps, "tokens_per_s": 100.0, "metrics": {}, "scores": list(map(float, scores)),
            "problem_ids": [f"p{i}" for i in range(n)], "nfe": [float(steps)] * n, "git_sha": sha, "dataset_sha256": data,
            "stage": "after", "config": {}}


@pytest.fixture
def rows_file(tmp_path):
    import json

    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for steps in (2, 8):
            rows.append(row("base", steps, (rng.random(200) < (0.4 if steps == 2 else 0.6)).astype(float), seed))
            rows.append(row("better", steps, (rng.random(200) < (0.55 if steps == 2 else 0.75)).astype(float), seed))
        rows.append(row("better", 8, (rng.random(200) < 0.72).astype(float), seed, decoding="threshold=0.9", nfe=4.0))
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_bootstrap_ci_known_case():
    # constant scores: zero-width interval
    assert report.bootstrap_ci(np.ones((2, 50))) == (1.0, 1.0, 1.0)
    # Bernoulli(0.5) with 400 problems: CI half-width close to 1.96 * sqrt(.25 / 400) = 0.049
    m = np.array([[0.0, 1.0] * 200])
    mean, lo, hi = report.bootstrap_ci(m, n_boot=4000)
    assert mean == 0.5 and abs((hi - lo) / 2 - 0.049) < 0.006


def test_bootstrap_ci_widens_with_seed_disagreement():
    agree = np.array([[1.0, 0.0] * 50] * 3)
    disagree = np.array([[1.0] * 100, [0.0] * 100, [1.0, 0.0] * 50])
    w = lambda m: np.subtract(*report.bootstrap_ci(m)[2:0:-1])  # noqa: E731
    assert w(disagree) > 2 * w(agree)


def test_mcnemar_by_hand():
    # discordant pairs: a right & b wrong 6 times, the reverse once: p = 2 * (C(7,0)+C(7,1)) / 2^7 = 16/128
    a = np.array([1] * 6 + [0] + [1] * 10 + [0] * 5)
    b = np.array([0] * 6 + [1] + [1] * 10 + [0] * 5)
    assert math.isclose(report.mcnemar(a, b), 16 / 128)
    assert report.mcnemar(a, a) == 1.0


def test_paired_bootstrap_detects_a_consistent_shift_and_not_noise():
    rng = np.random.default_rng(1)
    x = rng.random(300)
    assert report.paired_bootstrap(x + 0.05, x) < 0.01
    assert report.paired_bootstrap(x + rng.normal(0, 0.01, 300), x) > 0.01


def test_comparison_table_bolds_the_best_and_marks_significance(rows_file):
    df = report.load_rows([rows_file])
    t = report.comparison_table(df, paired_vs="base")
    assert list(t.index) == ["base", "better"]
    col = "t L16/b16/s2"
    assert t.loc["better", col].startswith("**") and "†" in t.loc["better", col]
    assert not t.loc["base", col].startswith("**")
    csv = report.render(t, "csv").splitlines()
    assert csv[0].split(",")[1:] == list(t.columns) and csv[1].startswith("base,") and csv[2].startswith("better,"), csv
    assert len({line.count(",") for line in csv}) == 1  # every line has the header's columns
    assert "\\textbf" in report.render(report.comparison_table(df, fmt="latex"), "latex")


def test_equal_accuracy_view_finds_the_cheapest_setting_reaching_the_target(rows_file):
    df = report.load_rows([rows_file])
    eq = report.equal_accuracy(df, target=0.5, baseline="base").set_index("method")
    assert eq.loc["base", "setting"] == "L16/b16/s8" and eq.loc["base", "nfe"] == 8  # base needs 8 steps for 50%
    assert eq.loc["better", "setting"] == "L16/b16/s2" and eq.loc["better", "nfe_ratio"] == 0.25
    eq = report.equal_accuracy(df, target=0.65, baseline="base").set_index("method")
    assert eq.loc["better", "setting"] == "L16/b16/threshold=0.9" and eq.loc["better", "nfe"] == 4.0
    assert eq.loc["base", "setting"] == "not reached"
    assert report.equal_accuracy(df, target=0.99).setting.eq("not reached").all()


def test_latency_table_has_nfe_and_ms(rows_file):
    lt = report.latency_table(report.load_rows([rows_file]))
    r = lt.loc[("t", "L16/b16/threshold=0.9", "better")]
    assert (r["NFE"], r["ms/request"], r["flag"]) == ("4.00", "4.00", "1 pass")  # no timing pass: marked, no IQR
    assert list(lt.index.get_level_values("setting")[:2]) == ["L16/b16/s2"] * 2  # settings in order, methods within


def test_check_provenance_refuses_mixed_code_versions(tmp_path, rows_file):
    import json

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(rows_file.read_text() + json.dumps(row("base", 2, [1.0, 0.0], sha="other")) + "\n")
    df = report.load_rows([mixed])
    with pytest.raises(UserError, match="2 code versions"):
        report.check_provenance(df)
    assert report.check_provenance(df, allow_mixed=True)


def test_pareto_front():
    from lfpo_bench.plot import pareto_front

    pts = [(1, 0.5), (2, 0.4), (2, 0.7), (4, 0.7), (8, 0.9)]
    assert pareto_front(pts) == [0, 2, 4]


def test_plots_are_written(rows_file, tmp_path):
    pytest.importorskip("matplotlib", reason="needs the `plot` extra: pip install 'lfpo-bench[plot]'")
    from lfpo_bench.plot import accuracy_plots

    files = accuracy_plots(report.load_rows([rows_file]), tmp_path, [str(rows_file)])
    assert {f.suffix for f in files} == {".png", ".svg"} and all(f.stat().st_size > 1000 for f in files)


def test_table_cli_on_fixture_rows(rows_file):
    from typer.testing import CliRunner

    from lfpo_bench.cli import app

    res = CliRunner().invoke(app, ["table", str(rows_file), "--paired-vs", "base", "--target", "0.58", "--baseline", "base", "--check"])
    assert res.exit_code == 0, res.output
    assert "†" in res.output and "equal accuracy" in res.output and "code abc" in res.output
    eq = res.output.split("equal accuracy:")[1]
    better = next(line for line in eq.splitlines() if line.startswith("| ('t', 'better')"))
    cells = [c.strip() for c in better.split("|")]
    # base reaches 58% only at 8 steps; better already with threshold decoding (4 NFE): half of base's NFE
    assert cells[2] == "L16/b16/threshold=0.9" and float(cells[4]) == 4.0 and float(cells[9]) == 0.5, cells


def test_extra_metrics_report_per_problem_values_and_old_rows_say_why_not(tmp_path):
    import json

    r = row("m", 2, [1.0, 0.5, 0.25, 1.0])
    r["metric_scores"] = {"solved": [1.0, 0.0, 0.0, 1.0]}
    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps(r) + "\n")
    df = report.load_rows([p], metric="solved")
    assert df["scores"][0] == [1.0, 0.0, 0.0, 1.0]
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps(row("m", 2, [1.0])) + "\n")
    with pytest.raises(UserError, match="no per-problem values"):
        report.load_rows([old], metric="solved")


def test_delta_table_by_hand(tmp_path):
    import json

    # base solves problems 0-5 of 10; the variant solves 0-8: +30 points on every problem it adds, paired
    rows = [row("lfpo", 4, [1.0] * 6 + [0.0] * 4, seed=s) for s in (0, 1)]
    var = [row("lfpo", 4, [1.0] * 9 + [0.0], seed=s) for s in (0, 1)]
    for r in var:
        r["method_cfg"] = {"k": 2}
    same = [row("lfpo", 4, [1.0] * 6 + [0.0] * 4, seed=s) for s in (0, 1)]
    for r in same:
        r["method_cfg"] = {"ema": 0.0}
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows + var + same))
    t = report.delta_table(report.load_rows([p]), "lfpo")
    cell = t.loc["lfpo[k=2]", "t L16/b16/s4"]
    assert cell.startswith("+30.0 [") and cell.endswith("]")  # 3 of 10 problems gained, no loss: p = 0.25 (McNemar)
    assert t.loc["lfpo[ema=0.0]", "t L16/b16/s4"] == "+0.0 [+0.0, +0.0]"
    with pytest.raises(UserError, match="did you mean 'lfpo'"):
        report.delta_table(report.load_rows([p]), "lfp")


def test_tuned_methods_keep_one_row_across_tasks_and_paired_tests_follow_each_tasks_choice(tmp_path):
    """A tune chooses per task, so one method carries a different label in each task: the cross-task table
    keeps one row per method, says what each task chose, and --paired-vs by method name pairs within tasks."""
    rng = np.random.default_rng(3)
    rows = []
    for task, lr in (("a", 1e-4), ("b", 1e-5)):
        for seed in range(2):
            r = row("m", 4, (rng.random(300) < 0.3).astype(float), seed, task=task)
            rows.append({**r, "chosen": {"train.lr": lr}})
            rows.append({**row("other", 4, (rng.random(300) < 0.7).astype(float), seed, task=task), "chosen": {"train.lr": 3e-5}})
    import json

    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = report.load_rows([tmp_path / "rows.jsonl"])
    assert sorted(set(report.labels(df))) == ["m[tuned]", "other[train.lr=3e-05]"]
    note = report.tuned_note(df)
    assert note.startswith("tuned per task: m: ") and "a train.lr=0.0001" in note and "b train.lr=1e-05" in note
    t = report.comparison_table(df, paired_vs="m")
    assert list(t.index) == ["m[tuned]", "other[train.lr=3e-05]"] and not t.isna().any().any()
    assert all("†" in t.loc["other[train.lr=3e-05]", c] for c in t.columns)  # 0.7 vs 0.3 on 600 pairs per task
    assert not any("†" in t.loc["m[tuned]", c] for c in t.columns)
    with pytest.raises(UserError, match="did you mean 'other'"):
        report.comparison_table(df, paired_vs="othr")
    assert not report.delta_table(df, "m").empty  # the ablation view accepts the method name too


def test_cli_errors_print_bracketed_labels_verbatim(tmp_path):
    """Error text is not console markup: a label such as lfpo[k=2] must reach the user whole."""
    import json
    import subprocess
    import sys

    p = tmp_path / "rows.jsonl"
    p.write_text(json.dumps({**row("lfpo", 4, [1.0, 0.0]), "method_cfg": {"k": 2}}) + "\n")

    out = subprocess.run([sys.executable, "-c", "from lfpo_bench.cli import main; main()", "table", str(p), "--paired-vs", "lfpo[k=3]"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "lfpo[k=2]" in out.stderr and "lfpo[k=3]" in out.stderr, out.stderr


def test_a_difference_carried_by_one_lucky_seed_is_not_significant():
    """Per problem, the seed-averaged scores of A beat B's on every problem (a problem-level test says
    "significant"), but two of A's three training seeds are below B: the seed-aware test must not."""
    rng = np.random.default_rng(0)
    N = 400
    B = (rng.random((3, N)) < 0.55).astype(float)
    lucky = np.ones(N)
    poor = (rng.random((2, N)) < 0.45).astype(float)
    A = np.vstack([lucky, poor])
    problem_level = report.paired_bootstrap(A.mean(0), B.mean(0))
    assert problem_level < 0.05  # the old test: seeds averaged first, then problems resampled
    d, lo, hi, p = report.seed_aware_compare(A, B)
    assert d > 0 and p >= 0.05 and lo < 0 < hi
    # and when every seed agrees, the same size of effect is significant
    A2 = (rng.random((3, N)) < 0.70).astype(float)
    d2, lo2, hi2, p2 = report.seed_aware_compare(A2, B)
    assert p2 < 0.05 and lo2 > 0


def test_seed_aware_tables_do_not_mark_a_one_seed_fluke(tmp_path):
    import json

    rng = np.random.default_rng(1)
    N = 300
    rows = [row("base", 4, (rng.random(N) < 0.5).astype(float), seed=s) for s in range(3)]
    flukey = [np.ones(N), (rng.random(N) < 0.4).astype(float), (rng.random(N) < 0.4).astype(float)]
    rows += [row("m", 4, sc, seed=s) for s, sc in enumerate(flukey)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = report.load_rows([tmp_path / "rows.jsonl"])
    t = report.comparison_table(df, paired_vs="base")
    assert not any("†" in v for v in t.loc["m"])
    dt = report.delta_table(df, "base")
    cell = dt.loc["m"].iloc[0]
    lo = float(cell.split("[")[1].split(",")[0])
    assert "†" not in cell and lo < 0


def test_stage_last_reads_each_trained_runs_last_update_and_the_untrained_start(tmp_path):
    import json

    rows = []
    for seed in (0, 1):
        rows.append({**row("none", 4, [1, 0, 0, 0], seed), "run_id": f"none-{seed}"})
        rows.append({**row("m", 4, [1, 1, 1, 0], seed), "run_id": f"m-{seed}"})  # the validation-selected checkpoint
        rows.append({**row("m", 4, [1, 0, 0, 1], seed), "run_id": f"m-{seed}", "stage": "last"})
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = lambda df: df.groupby("method")["accuracy"].mean().to_dict()  # noqa: E731
    assert acc(report.load_rows([p])) == {"none": 0.25, "m": 0.75}
    last = report.load_rows([p], stage="last")
    assert acc(last) == {"none": 0.25, "m": 0.5} and len(last) == 4


def test_auto_target_is_the_highest_accuracy_every_method_reaches(rows_file):
    df = report.load_rows([rows_file])
    summ = report.summarize(df, n_boot=10)
    best = summ.groupby("method")["mean"].max()
    goal = report.common_targets(df)
    assert goal == {"t": best.min()} and best["base"] < best["better"]
    eq = report.equal_accuracy(df, goal, baseline="base").set_index("method")
    assert not eq["setting"].eq("not reached").any()  # the weakest method reaches it at its best setting
    assert eq.loc["base", "setting"] == summ[summ.method == "base"].sort_values("mean").iloc[-1]["setting"]
    assert eq.loc["better", "nfe"] <= eq.loc["base", "nfe"]


def test_table_target_auto_and_a_bad_target_on_the_cli(rows_file):
    from typer.testing import CliRunner

    from lfpo_bench.cli import app

    res = CliRunner().invoke(app, ["table", str(rows_file), "--target", "auto", "--baseline", "base"])
    assert res.exit_code == 0 and "the highest every method reaches" in res.output
    res = CliRunner().invoke(app, ["table", str(rows_file), "--target", "most"])
    assert isinstance(res.exception, UserError) and "auto or match" in str(res.exception)


def test_equal_accuracy_baseline_may_name_a_tuned_method_by_its_method_name(rows_file, tmp_path):
    import json

    rows = [json.loads(x) for x in rows_file.read_text().splitlines()]
    for r in rows:
        if r["method"] == "base":
            r["method_cfg"] = {"mu": 4}  # its label is base[mu=4]
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    eq = report.equal_accuracy(report.load_rows([p]), 0.5, baseline="base").set_index("method")
    assert eq.loc["base[mu=4]", "nfe_ratio"] == 1.0 and eq.loc["better", "nfe_ratio"] == 0.25
    with pytest.raises(UserError, match="--baseline 'bse'.*did you mean"):
        report.equal_accuracy(report.load_rows([p]), 0.5, baseline="bse")


def test_holm_adjusts_a_family_of_p_values_step_down():
    # sorted 0.01, 0.03, 0.04, 0.5 -> x4, x3, x2, x1 = 0.04, 0.09, 0.08, 0.5 -> running max 0.04, 0.09, 0.09, 0.5
    assert report.holm([0.01, 0.04, 0.03, 0.5]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert report.holm([0.6, 0.6]).tolist() == [1.0, 1.0]  # capped at 1
    assert report.holm([0.02]).tolist() == [0.02]  # a family of one is not corrected


def test_above_with_holm_drops_a_marginal_gain_once_the_task_makes_many_comparisons(tmp_path):
    """A gain significant on its own (p about 0.02: +30 problems, -14, on every seed) stops counting when the task
    also compares 20 more rows with the start (Holm over the 22 comparisons of the task, the ones that went
    down or nowhere included); a clear gain counts either way; the uncorrected list keeps both."""
    import json

    n = 300
    start = np.array([float(i % 2 == 0) for i in range(n)])
    mild, up = start.copy(), start.copy()
    mild[[2 * i + 1 for i in range(30)]] = 1.0  # 30 problems the start missed, now right
    mild[[2 * i for i in range(100, 114)]] = 0.0  # 14 it had right, now wrong
    up[1::2] = 1.0
    def write(extra):
        rows = [row(m, 4, sc, seed) for seed in range(3) for m, sc in (("none", start), ("mild", mild), ("up", up))]
        rows += [row(f"same{k}", 4, start if k % 2 else 1 - up, seed) for seed in range(3) for k in range(extra)]
        f = tmp_path / f"rows{extra}.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return report.load_rows([f])

    raw = report.above(write(20)).set_index("method")
    assert sorted(raw.index) == ["mild", "up"] and 0.002 < raw.loc["mild", "p"] < 0.05 and raw.loc["up", "p"] < 1e-3
    few = report.above(write(0), correction="holm").set_index("method")
    assert sorted(few.index) == ["mild", "up"] and set(few.family) == {2}
    many = report.above(write(20), correction="holm")
    assert many.method.tolist() == ["up"] and many.family.tolist() == [22] and many.p_adj.iloc[0] < 0.05
    with pytest.raises(UserError, match="unknown correction 'bonferoni'"):
        report.above(write(0), correction="bonferoni")


def test_above_lists_only_significantly_higher_rows_per_task_and_setting(tmp_path):
    """Clearly higher: listed with its difference; as good: not; clearly LOWER: not (significant, wrong side);
    a one-seed fluke that other seeds undo: not (seeds are resampled)."""
    import json

    rng = np.random.default_rng(1)
    rows = []
    for seed in range(3):
        start = (rng.random(300) < 0.5).astype(float)
        rows.append(row("none", 4, start, seed))
        rows.append(row("up", 4, np.maximum(start, (rng.random(300) < 0.4)), seed))  # about +20 points on every seed
        rows.append(row("same", 4, start, seed))
        rows.append(row("down", 4, start * (rng.random(300) < 0.5), seed))
        fluke = np.ones(300) if seed == 0 else start * (rng.random(300) < 0.3)  # +50 on one seed, -35 on two
        rows.append(row("fluke", 4, fluke, seed))
        rows.append(row("none", 4, start, seed, task="u"))
        rows.append(row("same", 4, start, seed, task="u"))
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = report.above(report.load_rows([p]))
    assert list(zip(got.task, got.method)) == [("t", "up")]
    up = got.iloc[0]
    want = np.mean([r["accuracy"] for r in rows if r["method"] == "up"]) - np.mean(
        [r["accuracy"] for r in rows if r["method"] == "none" and r["task"] == "t"])
    assert up.delta == pytest.approx(want) and up.lo > 0 and up.p < 0.05
    assert report.above(report.load_rows([p])[lambda d: d.task == "u"]).empty  # a task where nothing moved


def test_cost_table_counts_each_run_once_and_shows_seed_spread_and_the_rows_update(tmp_path):
    import json

    def trained(method, seed, steps, opt, stage="after", sel=10, skipped=0):
        r = row(method, steps, [1.0, 0.0], seed=seed)
        r.update(run_id=f"{method}-{seed}", stage=stage)
        r["config"] = {"selected_update": sel, "last_update": 20,
                       "budget": {"opt_steps": opt, "rollout_forwards": 160, "forwards": 3 * opt, "backwards": 2 * opt,
                                  "skipped_updates": skipped}}
        return r

    rows = [row("none", s, [1.0, 0.0]) for s in (2, 8)]  # the start: no budget, no line
    for seed, opt, sel in ((0, 320, 20), (1, 320, 10), (2, 300, 0)):
        for steps in (2, 8):  # two settings of one run: counted once
            rows.append(trained("a", seed, steps, opt, sel=sel, skipped=1))
            rows.append(trained("a", seed, steps, opt, stage="last"))
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))

    cost = report.cost_table(report.load_rows([p]))
    assert list(cost.index) == [("t", "a")]
    line = cost.loc[("t", "a")]
    assert line["seeds"] == 3 and line["opt steps"] == "300-320" and line["rollout fwd"] == "160"
    assert line["train fwd"] == "900-960" and line["bwd"] == "600-640"
    assert line["skipped updates"] == 3  # one per run, not per row
    assert line["row's update / last"] == "20/20, 10/20, 0/20"
    last = report.cost_table(report.load_rows([p], stage="last")).loc[("t", "a")]
    assert last["row's update / last"] == "20/20, 20/20, 20/20" and last["skipped updates"] == 0
    assert report.cost_table(report.load_rows([p], stage="after").query("method == 'none'")).empty


def test_match_view_finds_the_fewest_baseline_steps_reaching_each_methods_best_and_tests_the_difference(tmp_path):
    import json

    n = 40
    def sc(k):  # k of n problems solved, the first k
        return [1.0] * k + [0.0] * (n - k)

    rows = []
    for seed in (0, 1):
        for steps, kb, km, kw in ((1, 10, 12, 5), (2, 24, 20, 6), (4, 30, 22, 8), (8, 31, 22, 9)):
            rows.append(row("base", steps, sc(kb), seed=seed, nfe=steps))
            rows.append(row("m", steps, sc(km), seed=seed, nfe=steps))  # best 22/40 at 4 steps (8 ties: fewer steps win)
            rows.append(row("strong", steps, sc(kw + 30), seed=seed, nfe=steps))  # best 39/40: base never reaches it
        rows.append(row("m", 8, sc(40), seed=seed, decoding="threshold=0.9", nfe=3.0))  # not a fixed-step setting
    p = tmp_path / "rows.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    df = report.load_rows([p])

    t = report.match_table(df, "base").set_index("method")
    m = t.loc["m"]
    assert m["its best"] == "55.0 @ 4 steps" and m["baseline reaches it"] == "60.0 @ 2 steps"
    assert m["NFE ratio"] == pytest.approx(0.5) and m["ms ratio"] == pytest.approx(0.5)  # latency_ms_p50 = steps / 2
    assert m["difference"].startswith("+5.0 [")  # 24/40 - 22/40, same problems
    s = t.loc["strong"]
    assert s["baseline reaches it"].startswith("not reached (best 77.5 @ 8)") and math.isnan(s["NFE ratio"])
    with pytest.raises(UserError, match="did you mean"):
        report.match_table(df, "bse")


def test_table_cli_target_match_needs_a_baseline(rows_file):
    from typer.testing import CliRunner

    from lfpo_bench.cli import app

    r = CliRunner().invoke(app, ["table", str(rows_file), "--target", "match"])
    assert isinstance(r.exception, UserError) and "--baseline" in str(r.exception)
    r = CliRunner().invoke(app, ["table", str(rows_file), "--target", "match", "--baseline", "better"])
    assert r.exit_code == 0, r.output
    assert "equal accuracy, tested" in r.output and "base" in r.output
