"""The papers' recipes (lfpo_bench/presets/recipe-*.yaml) cannot run here (LLaDA-8B, GPUs), so each one is
checked as far as this machine allows: it expands and validates against the real model's profile, and one
update runs on the tiny model with the same method and training settings, scaled down (a random tiny model,
the tiny task of the first task's family, one update of two prompts, the task's own rollout shape, full
fine-tune; TraceRL's shrink, which needs more steps than a tiny rollout has, at its default)."""

import pytest
import yaml

from lfpo_bench.config import load_file, make_task
from lfpo_bench.results import read_rows
from lfpo_bench.sweep import PRESETS, expand, sweep

RECIPES = sorted(PRESETS.glob("recipe-*.yaml"))
TINY_TASK = {"sudoku": "sudoku4", "countdown": "countdown3-mini", "math": "countdown3-mini", "code": "toy-code"}
SCALE = {"updates": 1, "prompts_per_update": 2, "val_limit": 4, "val_every": 0, "checkpoint_every": 0, "lora_r": 0,
         "load_in_4bit": False, "gradient_checkpointing": False, "micro_batch": 64}


def test_every_method_has_a_recipe():
    from lfpo_bench.registry import METHODS

    covered = {m for p in RECIPES for m in load_file(p)["methods"]}
    trains = {n for n in METHODS.names() if METHODS.get(n).trains and METHODS.get(n).needs_rollouts}
    assert trains <= covered, f"no recipe for {sorted(trains - covered)}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_expands_on_its_model_and_trains_one_scaled_down_update(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LFPO_BENCH_PROGRESS", "0")
    spec = load_file(path)
    cells = expand(spec, str(path))
    assert cells and all(c.model and c.model != "tiny" for c in cells)  # the recipe names its real model
    tiny_tasks = sorted({TINY_TASK[make_task(t).family] for t in spec["tasks"]})
    train = dict(spec.get("train") or {})
    train.pop("rollout", None)
    rollout = {k: v for k, v in (spec["train"].get("rollout") or {}).items() if k in ("decoding",)}  # the tiny task's shape
    method = {m: {k: v for k, v in (c or {}).items() if k != "shrink"} for m, c in (spec.get("method") or {}).items()}
    small = {**spec, "name": spec["name"] + "-tiny", "models": ["tiny-random"], "tasks": tiny_tasks[:1], "method": method,
             "train": {**train, **SCALE, "rollout": rollout}, "eval": {"limit": 4}, "timing": {"reps": 0}}
    f = tmp_path / "small.yaml"
    f.write_text(yaml.safe_dump(small))
    out, done, state = sweep(str(f), out=str(tmp_path / "out"), device="cpu", show_progress=False)
    assert not state.failed, state.failed
    rows = read_rows(out / "rows.jsonl")
    assert rows and {r["method"] for r in rows} == set(spec["methods"])
    assert all(r["stage"] in ("after", "last") for r in rows)
