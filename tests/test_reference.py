"""results/reference/regenerate.sh --quick, end to end through the local launcher (the reference tier of
.ci/run; tens of minutes on 2 cores): every part finishes, and what it writes is the protocol the reference
README describes. Its numbers are not checked (a smoke test's numbers are noise); its shape is. The shipped
protocols themselves are checked in tests/test_sweep.py. In the default suite: results/reference/publish.py on
a finished set in miniature (what it copies, what it drops, what it refuses)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lfpo_bench.registry import METHODS
from lfpo_bench.results import read_rows
from lfpo_bench.sweep import PRESETS

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("sudoku4", "countdown3-mini", "toy-code")
TRAINED = sorted(m for m in METHODS.names() if m not in ("none", "sft"))


@pytest.mark.reference
def test_quick_regeneration_writes_the_whole_protocol(tmp_path):
    out = tmp_path / "quick"
    env = {**os.environ, "LFPO_BENCH_PROGRESS": "0"}
    # in two commands, as a run split across machines or sessions goes: the three tunings, then (trials done) the
    # finals and the ablation; the second must run no trial again
    tuning = subprocess.run(["bash", str(ROOT / "results/reference/regenerate.sh"), "--quick", "--tuning-only", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    assert tuning.returncode == 0, tuning.stdout[-3000:] + tuning.stderr[-3000:]
    assert [p.split()[1:4] for p in (out / "parts.log").read_text().splitlines()] == [[t, "(tuning", "only)"] for t in TASKS]
    for t in TASKS:
        assert (out / f"fair-{t}" / "final" / "chosen.json").exists() and not (out / f"fair-{t}" / "final" / "rows.jsonl").exists()
    trials = {f: f.read_text() for f in sorted(out.glob("fair-*/tune/trial*/cells.jsonl"))}
    proc = subprocess.run(["bash", str(ROOT / "results/reference/regenerate.sh"), "--quick", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {f: f.read_text() for f in sorted(out.glob("fair-*/tune/trial*/cells.jsonl"))} == trials
    check_quick_output(out)
    sys.stdout.write((out / "parts.log").read_text())


# a stand-in for the CLI, so that regenerate.sh's own control flow is tested in seconds: `tune` makes the part's
# final/ folder with its choice (and, without --tuning-only, the final rows), `table` refuses a folder without
# rows (as the real one does) and writes its --out, `sweep` makes its --out folder
STUB_CLI = r"""#!/usr/bin/env bash
set -euo pipefail
echo "$*" >> "${STUB_LOG:-/dev/null}"
cmd=$1; shift
out=""; only=""; src=""
while [ $# -gt 0 ]; do
  case "$1" in --out) out=$2; shift ;; --tuning-only) only=1 ;; --config|--metric|--paired-vs|--target|--baseline|--stage|--deltas-vs|--launcher|--jobs) shift ;; -*) ;; *) src=$1 ;; esac
  shift
done
case "$cmd" in
  tune) mkdir -p "$out/final"; echo '{"lfpo": {"train.lr": 0.0001, "method.mu": 4}}' > "$out/final/chosen.json"
        [ -n "$only" ] || touch "$out/final/rows.jsonl" ;;
  table) [ -f "$src/rows.jsonl" ] || { echo "stub table: no rows in $src" >&2; exit 2; }; echo "table of $src" > "$out" ;;
  sweep) mkdir -p "$out"; touch "$out/rows.jsonl" ;;
  *) echo "stub: unexpected command $cmd" >&2; exit 2 ;;
esac
"""


def test_regenerate_ends_cleanly_after_any_parts_and_combines_tables_only_when_every_task_has_them(tmp_path):
    """A split run goes --tuning-only, then one task's final at a time, then the ablation: every step exits 0,
    and the combined tables appear only once all three tasks have their final tables (a task only tuned has a
    final/ folder holding its choice and no tables)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "lfpo-bench").write_text(STUB_CLI)
    (bin_dir / "lfpo-bench").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(tmp_path / "calls.log")}
    out = tmp_path / "run"

    def regen(*args):
        p = subprocess.run(["bash", str(ROOT / "results/reference/regenerate.sh"), *args, str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout

    said = regen("--tuning-only")
    assert "not written yet" in said and all(t in said.split("not written yet")[1] for t in TASKS)
    assert not (out / "table.md").exists()
    said = regen("--part", "sudoku4")
    assert not (out / "table.md").exists() and "countdown3-mini toy-code" in said
    regen("--part", "ablation")
    assert (out / "lfpo-ablation" / "table.md").exists() and not (out / "table.md").exists()
    regen("--part", "countdown3-mini", "--part", "toy-code")
    for v in ("table", "table-vs-lfpo", "table-match", "table-last"):
        text = (out / f"{v}.md").read_text()
        assert [line for line in text.splitlines() if line.startswith("## ")] == [f"## {t}" for t in TASKS]
    logged = [line.split()[1:3] for line in (out / "parts.log").read_text().splitlines()]
    assert logged == [[t, "(tuning"] for t in TASKS] + [["sudoku4", "done"], ["ablation", "done"],
                                                        ["countdown3-mini", "done"], ["toy-code", "done"]]

    # --tables renders every finished part's tables again from its rows and runs nothing else
    ran = [c for c in (tmp_path / "calls.log").read_text().splitlines() if "lfpo-ablation/table.md" in c]
    (tmp_path / "calls.log").unlink()
    (out / "fair-toy-code" / "table-match.md").unlink()  # e.g. written by a code version without that table
    said = regen("--tables")
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls and all(c.startswith("table ") for c in calls)
    for t in TASKS:
        for v in ("table", "table-vs-lfpo", "table-match", "table-last"):
            assert sum(f"--out {out}/fair-{t}/{v}.md" in c for c in calls) == 1, (t, v)
    ablation = [c for c in calls if f"--out {out}/lfpo-ablation/table.md" in c]
    deltas_vs = lambda c: c.split("--deltas-vs ")[1].split()[0]  # noqa: E731
    assert len(ablation) == len(ran) == 1 and deltas_vs(ablation[0]) == deltas_vs(ran[0])  # the tuned base's label
    assert deltas_vs(ran[0]).startswith("lfpo[") and "mu=4" in deltas_vs(ran[0])
    assert (out / "fair-toy-code" / "table-match.md").exists() and "rendered again" in said
    assert len((out / "parts.log").read_text().splitlines()) == 7  # no part ran


def check_quick_output(out: Path) -> None:
    """What ``regenerate.sh --quick OUT`` must have written (also callable on a finished folder)."""
    parts = [p for p in (out / "parts.log").read_text().splitlines() if "(tuning only)" not in p]
    assert [p.split()[1] for p in parts] == [*TASKS, "ablation"] and all(p.split()[-1] == "s" for p in parts)
    for task in TASKS:
        d = out / f"fair-{task}"
        spec = yaml.safe_load((PRESETS / f"fair-{task}-quick.yaml").read_text())
        tuning = [json.loads(x) for x in (d / "tuning.jsonl").read_text().splitlines()]
        per = {m: [r for r in tuning if r["method"] == m] for m in spec["methods"]}
        assert {m: len(v) for m, v in per.items() if m != "none"} == {m: spec["tune"]["trials"] + 1 for m in TRAINED}
        metric = (spec["train"] or {}).get("val_metric", "accuracy")
        assert all(r["metric"] == metric for r in tuning)
        chosen = json.loads((d / "final" / "chosen.json").read_text())
        assert sorted(chosen) == sorted(spec["methods"])
        rows = read_rows(d / "final" / "rows.jsonl")
        for m in spec["methods"]:
            mine = [r for r in rows if r["method"] == m]
            assert {r["seed"] for r in mine} == set(spec["final"]["seeds"]), (task, m)
            stages = {r["stage"] for r in mine}
            assert stages == ({"after"} if m == "none" else {"after", "last"}), (task, m, stages)  # selected and last
            if m != "none":  # the training cost is counted into every trained row
                assert all(r["config"]["budget"]["opt_steps"] >= 1 for r in mine), (task, m)
        table = (d / "table.md").read_text()
        assert table.startswith(f"{metric} (%)") and "training seeds resampled" in table  # the seed-aware test
        assert f"validation {metric}" in (d / "tuning.md").read_text()
    abl = out / "lfpo-ablation"
    arows = read_rows(abl / "rows.jsonl")
    assert arows and {r["split"] for r in arows} == {"validation"}
    assert "difference to lfpo[" in (abl / "table.md").read_text()  # the ablation read against the tuned base
    assert "--stage last" in (out / "fair-sudoku4" / "table-last.md").read_text()
    assert "the highest every method reaches" in (out / "fair-toy-code" / "table-vs-lfpo.md").read_text()
    assert "equal accuracy, tested" in (out / "fair-countdown3-mini" / "table-match.md").read_text()
    assert "training cost per run" in (out / "fair-sudoku4" / "table.md").read_text()
    combined = (out / "table.md").read_text()
    assert all(f"## {t}" in combined for t in TASKS)


# ---- publishing a finished set (default suite: on a copy of the committed set, which is a finished one) ----

def _publish_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("publish", ROOT / "results" / "reference" / "publish.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MINI = {"methods": ["none", "lfpo"], "models": ["tiny-random"],
        "train": {"updates": 1, "prompts_per_update": 2, "group_size": 2, "val_limit": 4, "val_every": 0},
        "tune": {"trials": 1, "seed": 0, "limit": 4, "grid": {"default": {"train.lr": [1e-4]}}},
        "final": {"seeds": [0], "eval": {"steps": [1], "limit": 4}, "timing": {"reps": 0}}}


@pytest.fixture(scope="module")
def finished_set(tmp_path_factory) -> Path:
    """A set regenerate.sh could have finished, in miniature: each part's tune (named as its protocol), its
    tables, the ablation sweep, a final run's model state and a job folder (which publishing must drop)."""
    from lfpo_bench.sweep import sweep
    from lfpo_bench.tune import tune

    src = tmp_path_factory.mktemp("finished") / "out"
    src.mkdir()
    for t in TASKS:
        f = src.parent / f"fair-{t}.yaml"
        f.write_text(yaml.safe_dump({**MINI, "name": f"fair-{t}", "tasks": [t]}))
        tune(str(f), out=str(src / f"fair-{t}"), show_progress=False)
        for name in ("table.md", "table-vs-lfpo.md", "table-match.md", "table-last.md"):
            (src / f"fair-{t}" / name).write_text(f"{name} of {t}\n")
        run = next((src / f"fair-{t}" / "final" / "runs").iterdir())
        (run / "trainer_state.pt").write_text("weights\n")
        (src / f"fair-{t}" / "final" / "jobs" / "j").mkdir(parents=True)
        (src / f"fair-{t}" / "final" / "jobs" / "j" / "1_log.out").write_text("x\n")
    ab = src / "lfpo-ablation.yaml"
    ab.write_text(yaml.safe_dump({"name": "lfpo-ablation-sudoku4", "methods": ["lfpo"], "tasks": ["sudoku4"], "seeds": [0],
                                  "models": ["tiny-random"], "train": MINI["train"], "method": {"lfpo": [{}, {"mu": 2}]},
                                  "eval": {"steps": [1], "limit": 4, "split": "validation"}, "timing": {"reps": 0}}))
    sweep(str(ab), out=str(src / "lfpo-ablation"), show_progress=False)
    (src / "lfpo-ablation" / "table.md").write_text("ablation\n")
    (src / "table.md").write_text("combined\n")
    (src / "parts.log").write_text("part sudoku4 done in 1 s\n")
    return src


@pytest.fixture
def src(finished_set, tmp_path) -> Path:
    shutil.copytree(finished_set, tmp_path / "out")
    return tmp_path / "out"


def test_publish_copies_a_finished_set_without_model_state_and_draws_the_plots(src, tmp_path):
    pub = _publish_module()
    dest = tmp_path / "dest"
    (dest / "fair-sudoku4" / "stale").mkdir(parents=True)
    (dest / "fair-sudoku4" / "stale" / "old.md").write_text("from the set before\n")
    (dest / "README.md").write_text("the reading\n")
    pub.publish(src, dest, allow_no_movement=True)  # a miniature set's start does not move
    assert (dest / "README.md").read_text() == "the reading\n"  # what is not the protocol's output stays
    assert not (dest / "fair-sudoku4" / "stale").exists()  # a part is replaced whole, never merged with the old one
    for t in ("sudoku4", "countdown3-mini", "toy-code"):
        for f in ("final/rows.jsonl", "final/cells.jsonl", "final/sweep.yaml", "tuning.md", "tune/trial0/rows.jsonl"):
            assert (dest / f"fair-{t}" / f).read_bytes() == (src / f"fair-{t}" / f).read_bytes(), (t, f)
        runs = list((dest / f"fair-{t}" / "final" / "runs").iterdir())  # a final run's curve, never its weights
        assert runs and all({p.name for p in r.iterdir()} <= {"config.json", "log.jsonl"} for r in runs)
        assert any((r / "log.jsonl").exists() for r in runs)
        assert not (dest / f"fair-{t}" / "tune" / "trial0" / "runs").exists()
        assert not (dest / f"fair-{t}" / "final" / "jobs").exists()
        assert (dest / f"{t}-accuracy.png").stat().st_size > 0 and (dest / f"{t}-accuracy.svg").exists()
    assert (dest / "table.md").read_text() == "combined\n" and (dest / "parts.log").exists()
    from lfpo_bench.report import load_rows

    assert len(load_rows([dest / "fair-sudoku4" / "final"])) > 0  # the published folder is a table's input as it stands
    # and git commits what publishing copies: every published file, at its place under results/reference, is
    # not ignored (the training curves live in runs/, which the repo ignores elsewhere); weights would be
    published = sorted(str(Path("results/reference") / p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    weights = sorted(str(Path("results/reference") / p.relative_to(src)) for p in src.rglob("*")
                     if p.is_file() and ("checkpoint" in p.parts or p.name == "trainer_state.pt"))
    assert any("/runs/" in p for p in published) and weights
    assert ignored(published) == []
    assert ignored(weights) == weights


def ignored(paths: list[str]) -> list[str]:
    """Which of these repository paths git would ignore (they need not exist)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    p = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(paths) + "\n",
                       capture_output=True, text=True)
    assert p.returncode in (0, 1), p.stderr
    return sorted(p.stdout.split())


@pytest.mark.parametrize("break_it, says", [
    (lambda src: shutil.rmtree(src / "lfpo-ablation"), "lfpo-ablation is missing"),
    (lambda src: (src / "fair-toy-code" / "table-last.md").unlink(), "table-last.md is missing"),
    (lambda src: (src / "fair-sudoku4" / "table-match.md").unlink(), "regenerate.sh --tables"),  # rendered by older code
    (lambda src: _drop_last_done(src / "fair-countdown3-mini" / "final"), "not done"),
    (lambda src: _drop_method_rows(src / "fair-countdown3-mini" / "final", "lfpo"), "lacks the rows of lfpo/s0"),
    (lambda src: _drop_last_done(src / "fair-sudoku4" / "tune" / "trial0"), "not done"),
    (lambda src: _fail_one(src / "lfpo-ablation"), "not done"),
    (lambda src: _rename(src / "fair-sudoku4" / "tune.yaml", "fair-sudoku4-quick"), "smoke test"),
    (lambda src: _old_key(src / "fair-toy-code" / "final" / "sweep.yaml"), "does not read under this code version"),
])
def test_publish_refuses_an_unfinished_or_quick_set_and_leaves_the_destination_alone(src, tmp_path, break_it, says):
    pub = _publish_module()
    break_it(src)
    dest = tmp_path / "dest"
    (dest / "fair-sudoku4").mkdir(parents=True)
    (dest / "fair-sudoku4" / "table.md").write_text("the committed set\n")
    with pytest.raises(pub.Refused, match=says):
        pub.publish(src, dest, allow_no_movement=True)
    assert (dest / "fair-sudoku4" / "table.md").read_text() == "the committed set\n"
    p = subprocess.run([sys.executable, str(ROOT / "results" / "reference" / "publish.py"), str(src), str(dest),
                        "--allow-no-movement"], capture_output=True, text=True)
    assert p.returncode == 2 and says in p.stderr and "Traceback" not in p.stderr


def test_publish_refuses_a_task_nothing_moves_and_names_what_moved_elsewhere(src, tmp_path, capsys):
    pub = _publish_module()
    for t in ("sudoku4", "countdown3-mini"):  # LFPO right on every problem, the start wrong on most: they move
        f = src / f"fair-{t}" / "final" / "rows.jsonl"
        rows = read_rows(f)
        for r in rows:  # on 60 problems, so that the difference can be significant
            n = 60
            r["problem_ids"] = [f"q{i}" for i in range(n)]
            r["scores"] = [1.0] * n if r["method"] == "lfpo" else [float(i % 4 == 0) for i in range(n)]
            r["accuracy"] = sum(r["scores"]) / n
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(pub.Refused, match="task toy-code: no method is significantly above its start"):
        pub.publish(src, tmp_path / "dest")
    assert not (tmp_path / "dest" / "fair-sudoku4").exists()
    moved = pub.movement  # the two doctored tasks pass, each naming LFPO's rows
    with pytest.raises(pub.Refused):
        moved(src)
    (src / "fair-toy-code").rename(src / "fair-toy-code.off")
    shutil.copytree(src / "fair-sudoku4", src / "fair-toy-code")  # stands in for a third task that moved
    got = moved(src)
    assert set(got) == {"sudoku4", "countdown3-mini", "toy-code"} and all(r and r[0].startswith("lfpo") for r in got.values())
    shutil.rmtree(src / "fair-toy-code")
    (src / "fair-toy-code.off").rename(src / "fair-toy-code")
    out = subprocess.run([sys.executable, str(ROOT / "results" / "reference" / "publish.py"), str(src), str(tmp_path / "d")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "toy-code" in out.stderr and "--allow-no-movement" in out.stderr


def _drop_last_done(folder: Path) -> None:
    lines = (folder / "cells.jsonl").read_text().splitlines()
    i = max(k for k, line in enumerate(lines) if json.loads(line)["status"] == "done")
    (folder / "cells.jsonl").write_text("".join(line + "\n" for k, line in enumerate(lines) if k != i))


def _drop_method_rows(folder: Path, method: str) -> None:
    """A final whose cells all read done but whose rows lack one method (lost, or never appended)."""
    lines = (folder / "rows.jsonl").read_text().splitlines()
    assert any(json.loads(line)["method"] == method for line in lines)
    (folder / "rows.jsonl").write_text("".join(line + "\n" for line in lines if json.loads(line)["method"] != method))


def _fail_one(folder: Path) -> None:
    """A sweep that finished with a failed cell (a part then still ends, and writes its tables)."""
    lines = (folder / "cells.jsonl").read_text().splitlines()
    i = max(k for k, line in enumerate(lines) if json.loads(line)["status"] == "done")
    rec = json.loads(lines[i])
    lines[i] = json.dumps({"cell": rec["cell"], "label": rec["label"], "status": "failed", "error": "boom"})
    (folder / "cells.jsonl").write_text("".join(line + "\n" for line in lines))


def _old_key(sweep_yaml: Path) -> None:
    """A sweep file as an older code version wrote it (a key since renamed)."""
    spec = yaml.safe_load(sweep_yaml.read_text())
    spec["train"] = {**spec.get("train", {}), "rollout_decoding": "shared"}
    sweep_yaml.write_text(yaml.safe_dump(spec))


def _rename(tune_yaml: Path, name: str) -> None:
    spec = yaml.safe_load(tune_yaml.read_text())
    tune_yaml.write_text(yaml.safe_dump({**spec, "name": name}))
