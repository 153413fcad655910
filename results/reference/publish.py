"""Publish a folder that results/reference/regenerate.sh finished as the committed reference set.

    python results/reference/publish.py OUT [DEST] [--allow-no-movement]   (DEST: this script's folder)

Render its tables with this checkout first (`bash results/reference/regenerate.sh --tables OUT`): a folder whose
tables predate the equal-accuracy test (table-match.md) is refused.

Refuses a folder in which any part, or any cell of any of its sweeps, is unfinished, or whose final rows lack a
method of its protocol at one of its seeds: a reference set is never published half-made; and one where a task
has no final row significantly above its start under the seed-aware test, corrected for the number of comparisons on that task (Holm): such a task is not a benchmark
(--allow-no-movement overrides, for a look at one). Replaces DEST's protocol files (fair-*/, lfpo-ablation/,
the combined tables, the plots) with OUT's, leaving the rest of DEST (its README, this script, regenerate.sh) alone. What is
copied: every sweep's sweep.yaml, cells.jsonl, rows.jsonl, timing.jsonl and tables, the tuning records, the
final runs' config.json and log.jsonl (their training curves), parts.log; never model state, job folders or
locks. Then draws each task's accuracy plots with `lfpo-bench plot`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

TASKS = ("sudoku4", "countdown3-mini", "toy-code")
PARTS = [f"fair-{t}" for t in TASKS] + ["lfpo-ablation"]
TABLES = ("table.md", "table-vs-lfpo.md", "table-match.md", "table-last.md")
KEEP_RUN_FILES = ("config.json", "log.jsonl")  # a final run's training curve, not its weights
SKIP = {"jobs", ".lock", ".lfpo-bench.json"}
BOOT = 10_000  # bootstrap replicates of the movement check: p-values to 1e-4, below a Holm threshold of 0.05 / 45


class Refused(Exception):
    pass


def sweep_folders(src: Path) -> list[Path]:
    return sorted(p.parent for p in src.rglob("sweep.yaml") if "runs" not in p.relative_to(src).parts)


def unfinished(folder: Path) -> list[str]:
    """The labels of the cells of a sweep folder that are not done."""
    from lfpo_bench.config import load_file
    from lfpo_bench.sweep import expand, read_state
    from lfpo_bench.types import UserError

    state = read_state(folder)
    try:
        cells = expand(load_file(folder / "sweep.yaml"), str(folder / "sweep.yaml"))
    except UserError as e:  # a folder written by another code version: its cells cannot be checked here
        raise Refused(f"{folder / 'sweep.yaml'} does not read under this code version ({e}); publish a folder regenerated "
                      "with this checkout") from None
    return [c.label() for c in cells if c.id not in state.done]


def missing_rows(part: Path) -> list[str]:
    """``method/s<seed>`` of the protocol (``tune.yaml``: its methods, its final seeds) with no test row in the
    part's final rows: the committed set must hold every method at every seed, whatever the cell records say."""
    from lfpo_bench.results import read_rows

    spec = yaml.safe_load((part / "tune.yaml").read_text()) or {}
    seeds = (spec.get("final") or {}).get("seeds") or [0]
    have = {(r.get("method"), r.get("seed")) for r in read_rows(part / "final" / "rows.jsonl") if r.get("split") == "test"}
    return [f"{m}/s{s}" for m in spec.get("methods") or [] for s in seeds if (m, s) not in have]


def check(src: Path) -> None:
    if not src.is_dir():
        raise Refused(f"{src} is not a folder; give the folder regenerate.sh wrote (e.g. results/rerun)")
    for part in PARTS:
        if not (src / part).is_dir():
            raise Refused(f"{src / part} is missing: run `bash results/reference/regenerate.sh {src}` until every part is done")
    for t in TASKS:
        for name in TABLES:
            if not (src / f"fair-{t}" / name).exists():
                why = ("the part did not finish; rerun regenerate.sh on it" if not (src / f"fair-{t}" / "table.md").exists()
                       else "its tables were rendered by an older checkout; render them again with this one: "
                            f"bash results/reference/regenerate.sh --tables {src}")
                raise Refused(f"{src / f'fair-{t}' / name} is missing: {why}")
    if not (src / "lfpo-ablation" / "table.md").exists():
        raise Refused(f"{src / 'lfpo-ablation' / 'table.md'} is missing: the ablation did not finish; rerun regenerate.sh on {src}")
    for t in TASKS:
        name = str((yaml.safe_load((src / f"fair-{t}" / "tune.yaml").read_text()) or {}).get("name", ""))
        if name != f"fair-{t}":
            raise Refused(f"{src / f'fair-{t}'} ran protocol {name!r}, not fair-{t}"
                          + (" (--quick is the protocol's smoke test, never the reference set)" if name.endswith("-quick") else ""))
    for t in TASKS:
        missing = missing_rows(src / f"fair-{t}")
        if missing:
            raise Refused(f"{src / f'fair-{t}' / 'final' / 'rows.jsonl'} lacks the rows of {', '.join(missing[:4])}"
                          f"{', ...' if len(missing) > 4 else ''}: every method of the protocol needs its rows at every final "
                          f"seed; rerun regenerate.sh on {src}")
    for f in sweep_folders(src):
        left = unfinished(f)
        if left:
            raise Refused(f"{f}: {len(left)} cell(s) not done ({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}); "
                          f"see `lfpo-bench sweep status {f}` and rerun regenerate.sh on {src}")


def movement(src: Path) -> dict[str, list[str]]:
    """Per task, the final rows significantly above the start (``report.above``, seed-aware) on the metric the
    protocol compares (its ``train.val_metric``, else the task score), after Holm's correction over every
    comparison with the start on that task (9 methods x 5 settings: uncorrected, about two rows of a task
    nothing moved would pass by chance). Refuses a task where none is: it would be a table of its start, not
    a benchmark (issue 28)."""
    from lfpo_bench.report import above, load_rows, vs_base

    moved = {}
    for t in TASKS:
        spec = yaml.safe_load((src / f"fair-{t}" / "tune.yaml").read_text()) or {}
        metric = str((spec.get("train") or {}).get("val_metric") or "accuracy")
        compared = vs_base(load_rows([src / f"fair-{t}" / "final"], metric=metric), n_boot=BOOT)
        got = above(None, correction="holm", compared=compared)
        if got.empty:
            raw = above(None, compared=compared)
            raise Refused(f"task {t}: no method is significantly above its start (none) on {metric} at any setting of "
                          f"{src / f'fair-{t}' / 'final'} once the comparisons are corrected for their number (Holm; "
                          f"{len(raw)} row(s) pass p < 0.05 uncorrected); a task nothing moves is not a benchmark: change "
                          "the task or its start (--allow-no-movement publishes it anyway)")
        moved[t] = [f"{r.method} {r.setting} +{100 * r.delta:.1f} (Holm p {r.p_adj:.4f} of {r.family})"
                    for r in got.sort_values("delta", ascending=False).itertuples()]
    return moved


def copy_part(src: Path, dst: Path) -> None:
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if SKIP & set(rel.parts) or not p.is_file():
            continue
        if "runs" in rel.parts:
            i = rel.parts.index("runs")
            final_run = "final" in rel.parts[:i] or src.name == "lfpo-ablation"  # trial runs: their sweep's rows say it
            if not final_run or len(rel.parts) != i + 3 or rel.name not in KEEP_RUN_FILES:  # runs/<cell>/<file> only
                continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst / rel)


def publish(src: Path, dest: Path, allow_no_movement: bool = False) -> None:
    check(src)
    if not allow_no_movement:
        for t, rows in movement(src).items():
            print(f"{t}: {len(rows)} row(s) significantly above the start after Holm's correction, best {rows[0]}")
    dest.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        shutil.rmtree(dest / part, ignore_errors=True)
        copy_part(src / part, dest / part)
    for name in (*TABLES, "lfpo-ablation.yaml", "parts.log"):
        (dest / name).unlink(missing_ok=True)
        if (src / name).exists():
            shutil.copy2(src / name, dest / name)
    for old in [*dest.glob("*-accuracy.png"), *dest.glob("*-accuracy.svg")]:
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:  # plot writes only into a folder of its own
        plots = Path(tmp) / "plots"
        cmd = [sys.executable, "-m", "lfpo_bench.cli", "plot", *(str(dest / f"fair-{t}" / "final") for t in TASKS), "--out", str(plots)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise Refused(f"`lfpo-bench plot` failed on the published folders: {p.stderr.strip()[-800:]}")
        for f in sorted(plots.glob("*-accuracy.*")):
            shutil.copy2(f, dest / f.name)
    print(f"published {src} into {dest}: {', '.join(PARTS)}, {', '.join(TABLES)}, plots")


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    allow = "--allow-no-movement" in argv
    argv = [a for a in argv if a != "--allow-no-movement"]
    if len(argv) not in (1, 2) or any(a.startswith("-") for a in argv):
        print("usage: python results/reference/publish.py OUT [DEST] [--allow-no-movement]  (OUT: a folder regenerate.sh "
              "finished)", file=sys.stderr)
        return 2
    dest = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent
    try:
        publish(Path(argv[0]), dest, allow_no_movement=allow)
    except Refused as e:
        print(f"publish.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
