"""results/reference/regenerate.sh --quick, end to end through the local launcher (the reference tier of
.ci/run; tens of minutes on 2 cores): every part finishes, and what it writes is the protocol the reference
README describes. Its numbers are not checked (a smoke test's numbers are noise); its shape is. The shipped
protocols themselves are checked in tests/test_sweep.py."""

import json
import os
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
    proc = subprocess.run(["bash", str(ROOT / "results/reference/regenerate.sh"), "--quick", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_quick_output(out)
    sys.stdout.write((out / "parts.log").read_text())


def check_quick_output(out: Path) -> None:
    """What ``regenerate.sh --quick OUT`` must have written (also callable on a finished folder)."""
    parts = (out / "parts.log").read_text().splitlines()
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
    combined = (out / "table.md").read_text()
    assert all(f"## {t}" in combined for t in TASKS)
