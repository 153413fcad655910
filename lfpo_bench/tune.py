"""``lfpo-bench tune``: the same tuning budget for every method, selection on the validation split only,
then each method's chosen configuration over several seeds on the test split.

A tune file (YAML) is a sweep file (``sweep.py``) plus two sections:

    name: fair-sudoku4
    methods: [lfpo, diffu_grpo, wd1, spg]
    tasks: [sudoku4]
    train: {updates: 20, rollout: {decoding: shared}}    # shared by every trial and every final run
    tune:
      trials: 4                   # every method gets exactly this many trials (one seed each)
      seed: 0
      grid:                       # per method, or `default` for the others: train.* and method.* knobs
        default: {train.lr: [1e-5, 3e-5, 1e-4, 3e-4]}                      # a product
        wd1: {train.lr: [1e-5, 1e-4], method.mu: [4, 12]}                 # a product of 4 points
        spg: [{train.lr: 1e-5, method.mu: 4}, {train.lr: 3e-5}, {train.lr: 1e-4}, {train.lr: 3e-4, method.mu: 1}]
    final:
      seeds: [0, 1, 2]
      eval: {steps: [1, 2, 4, 8, 16], thresholds: [0.9]}
      timing: {reps: 9}

Phase 1 (``<out>/tune/trial<i>/``, one sweep per trial index): every trial trains and is evaluated on the
task's validation split at the rollout steps (``tune.steps`` to change); its score is that accuracy,
averaged over tasks, **of its last update** (the run's "last" rows): the checkpoint the trial's own
validation selected was picked on the same validation problems, so scoring it would reward the selection
twice (and floor every trial at its start). Methods that do not train are scored on their one checkpoint.
A chosen value that sits on an edge of its knob's grid is flagged in ``tuning.md`` (a count chosen at 1 is
marked "at its floor" instead: no grid goes below it); with
``tune.extend_edges: N`` (``true`` = 1) N extension rounds follow, each giving **every** training method
exactly one more trial, so budgets stay equal: the chosen point with its knob moved one grid step beyond
the edge it sits on (geometric steps for positive values, arithmetic otherwise), or, for a choice inside
its grid, beyond the edge nearest to it. A method's grid must have exactly
``trials`` points (the budget is a number of trials, not a grid shape); the best trial is chosen (ties:
the earlier trial in grid order). Methods that do not train (``none``) get one trial. Phase 2
(``<out>/final/``, one sweep, so one interleaved timing pass): each method's chosen configuration over
``final.seeds`` on the test split with ``final.eval``. ``<out>/tuning.md`` and ``tuning.jsonl`` hold every
trial with its configuration and validation score and mark the chosen ones; the final rows name their
configuration (``method_cfg``, ``train_cfg``). Both phases resume like sweeps: run the same command again.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import yaml

from .config import load_file
from .evaluate import metric_of
from .results import read_rows
from .sweep import TOP_KEYS, expand, sweep
from .types import UserError

TUNE_KEYS = TOP_KEYS | {"tune", "final"}


def _knobs(grid: dict, method: str, where: str) -> tuple[dict, dict]:
    """Split a method's grid into (train values, method values), each {field: [values]}."""
    train, meth = {}, {}
    for k, v in (grid or {}).items():
        section, _, name = k.partition(".")
        if section not in ("train", "method") or not name:
            raise UserError(f"{where}: tune.grid.{method}: key {k!r} must be train.<field> or method.<field>")
        (train if section == "train" else meth)[name] = v if isinstance(v, list) else [v]
    return train, meth


def trial_points(grid: dict | list, method: str, where: str) -> list[tuple[dict, dict]]:
    """The (train, method) settings of each trial, in grid order: the product of a mapping of value lists, or
    a list of points (mappings of single values), so that a method can tune its own knobs on the same budget."""
    if isinstance(grid, list):
        points = []
        for i, point in enumerate(grid):
            if not isinstance(point, dict) or any(isinstance(v, (list, dict)) for v in point.values()):
                raise UserError(f"{where}: tune.grid.{method}[{i}]: a list grid holds points, each a mapping of single "
                                f"values such as {{train.lr: 1e-5, method.mu: 4}}, got {point!r}")
            t, m = _knobs(point, method, where)
            points.append(({k: v[0] for k, v in t.items()}, {k: v[0] for k, v in m.items()}))
        return points
    if not isinstance(grid, dict):
        raise UserError(f"{where}: tune.grid.{method} must be a mapping of value lists or a list of points, got {grid!r}")
    train, meth = _knobs(grid, method, where)
    keys = [("train", k) for k in sorted(train)] + [("method", k) for k in sorted(meth)]
    values = [train[k] if s == "train" else meth[k] for s, k in keys]
    points = []
    for combo in itertools.product(*values):
        t = {k: v for (s, k), v in zip(keys, combo) if s == "train"}
        m = {k: v for (s, k), v in zip(keys, combo) if s == "method"}
        points.append((t, m))
    return points


def plan(spec: dict, where: str) -> dict[str, list[tuple[dict, dict]]]:
    """Per method, its trials; checks that every training method has the same number."""
    from .registry import METHODS

    unknown = set(spec) - TUNE_KEYS
    if unknown:
        raise UserError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(TUNE_KEYS)}")
    tune = spec.get("tune") or {}
    bad = set(tune) - {"trials", "seed", "grid", "steps", "limit", "extend_edges"}
    if bad:
        raise UserError(f"{where}: unknown tune key(s) {sorted(bad)}; allowed: trials, seed, grid, steps, limit, extend_edges")
    ext = tune.get("extend_edges", 0)
    if isinstance(ext, bool):
        ext = int(ext)
    if not isinstance(ext, int) or ext < 0:
        raise UserError(f"{where}: tune.extend_edges must be true, false or a number of rounds >= 0, got {tune.get('extend_edges')!r}")
    if not isinstance(tune.get("trials"), int) or tune["trials"] < 1:
        raise UserError(f"{where}: tune.trials must be a positive integer (the same budget for every method)")
    grid = tune.get("grid") or {}
    for m in grid:
        if m != "default" and m not in spec.get("methods", []):
            raise UserError(f"{where}: tune.grid has a grid for {m!r}, which is not in methods")
    out = {}
    for m in spec.get("methods") or []:
        if not METHODS.get(m).trains:
            out[m] = [({}, {})]
            continue
        points = trial_points(grid.get(m, grid.get("default") or {}), m, where)
        if len(points) != tune["trials"]:
            raise UserError(f"{where}: method {m!r} has {len(points)} trial(s) in its grid but tune.trials is "
                            f"{tune['trials']}: every method gets the same number of trials; give it a grid of exactly that size")
        if ext and len(points) > 1 and not knob_values(points):
            raise UserError(f"{where}: tune.extend_edges gives every method one more trial per round past a grid edge, but "
                            f"method {m!r} has no numeric knob with two or more values to move; give its grid one (e.g. train.lr)")
        out[m] = points
    return out


def _base(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k in TOP_KEYS and k not in ("seeds", "eval", "timing", "method", "train_by_method")}


def tune_spec(spec: dict, trials: dict, where: str) -> list[dict]:
    """Phase 1 as one sweep per trial index (a sweep expands lists, so trial i of every method is one sweep:
    methods x tasks x models, one seed); evaluated on each task's validation split."""
    from .config import make_task

    tasks = [make_task(t) for t in spec["tasks"]]
    vals = {t.val_split for t in tasks}
    if len(vals) != 1:
        raise UserError(f"{where}: the tasks name their validation splits differently ({sorted(vals)}); tune one task "
                        "family per file")
    from .config import flatten
    from .decoding import RolloutConfig
    from .trainer import TrainConfig

    train, tune = flatten(TrainConfig, spec.get("train"), "train."), spec.get("tune") or {}
    steps = tune.get("steps") or [RolloutConfig(steps=train.get("rollout.steps")).resolve(tasks[0])[2]]
    seed = int(tune.get("seed", 0))
    specs = []
    n = max(len(p) for p in trials.values())
    for i in range(n):
        methods = [m for m, p in trials.items() if i < len(p)]
        s = {**_base(spec), "name": f"{spec.get('name', 'tune')}-trial{i}", "methods": methods, "seeds": [seed],
             "eval": {"split": next(iter(vals)), "steps": list(steps) if isinstance(steps, list) else [steps],
                      **({"limit": tune["limit"]} if tune.get("limit") else {})},
             "timing": {"reps": 0},
             "method": {m: trials[m][i][1] for m in methods if trials[m][i][1]},
             "train_by_method": {m: trials[m][i][0] for m in methods if trials[m][i][0]}}
        specs.append({k: v for k, v in s.items() if v or k in ("eval", "timing")})
    return specs


def row_names(methods) -> dict[str, str]:
    """The protocol's method entries by the name their rows carry: a file plugin ``path/x.py:MyRL`` writes
    rows as ``MyRL`` (its ``name``), and its trials must still count as that entry's."""
    from .registry import METHODS

    names: dict[str, str] = {}
    for m in methods:
        n = getattr(METHODS.get(m), "name", m) or m
        if names.setdefault(n, m) != m:
            raise UserError(f"methods {names[n]!r} and {m!r} both write their rows as {n!r}: their trials could not be "
                            "told apart; give the plugin its own `name`")
    return names


def scores(out: Path, metric: str = "accuracy", names: dict[str, str] | None = None) -> list[dict]:
    """Every finished trial: method, trial index, configuration, validation score under ``metric`` (the
    protocol's ``train.val_metric``) of its last update (mean over tasks/models; a method that does not train:
    its one checkpoint). The score is kept as ``val_accuracy`` whatever the metric, and named in ``metric``.
    ``names`` (``row_names``): a row's method name to the protocol's entry for it.

    The records come in one canonical order (trial, then the protocol's method order, then configuration),
    never in the order the rows were written: a trial's rows are appended as its cells finish, which depends
    on the launcher, the number of workers and the machine's timing."""
    names = names or {}
    recs = []
    for f in sorted((out / "tune").glob("trial*/rows.jsonl"), key=lambda p: int(p.parent.name[5:])):
        i = int(f.parent.name[5:])
        by = {}
        rows = read_rows(f)
        trained = {r["method"] for r in rows if r.get("stage") == "last"}
        for r in rows:
            if r.get("stage") != ("last" if r["method"] in trained else "after"):
                continue
            key = (r["method"], json.dumps(r.get("method_cfg") or {}, sort_keys=True), json.dumps(r.get("train_cfg") or {}, sort_keys=True))
            score = metric_of(r, metric, f"trial {i}'s rows ({f})")
            by.setdefault(key, []).append((score, (r.get("config") or {}).get("selected_update")))
        for (m, mc, tc), got in by.items():
            recs.append({"method": names.get(m, m), "trial": i, "method_cfg": json.loads(mc), "train_cfg": json.loads(tc),
                         "val_accuracy": sum(a for a, _ in got) / len(got), "metric": metric,
                         "selected_updates": sorted({u for _, u in got if u is not None})})
    rank = {m: i for i, m in enumerate(names.values())}
    return sorted(recs, key=lambda r: (r["trial"], rank.get(r["method"], len(rank)), r["method"],
                                       json.dumps(r["method_cfg"], sort_keys=True), json.dumps(r["train_cfg"], sort_keys=True)))


def choose(recs: list[dict], trials: dict, shared_train: dict) -> dict[str, dict]:
    """The best trial of each method (ties: earlier trial); only methods whose trials are all done.

    Only the trials ``trials`` holds count: a rerun of a tune whose edge-extension rounds already ran reads their
    records too, and the choice before an extension round must be the one that made that round (else it would
    index past the grid, or extend from a point the first run never chose)."""
    chosen = {}
    for m, points in trials.items():
        mine = sorted((r for r in recs if r["method"] == m and r["trial"] < len(points)), key=lambda r: r["trial"])
        if len(mine) < len(points):
            continue
        best = max(mine, key=lambda r: (r["val_accuracy"], -r["trial"]))
        tuned_train = {k: v for k, v in best["train_cfg"].items() if k in points[best["trial"]][0]}
        chosen[m] = {**best, "tuned_train": tuned_train}
    return chosen


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def knob_values(points: list[tuple[dict, dict]]) -> dict[str, list]:
    """Per knob ("train.lr", "method.mu"), the sorted distinct numeric values the grid gives it."""
    vals: dict[str, set] = {}
    for t, m in points:
        for section, d in (("train", t), ("method", m)):
            for k, v in d.items():
                if _numeric(v):
                    vals.setdefault(f"{section}.{k}", set()).add(v)
    return {k: sorted(v) for k, v in vals.items() if len(v) >= 2}


def edges_of(points: list[tuple[dict, dict]], point: tuple[dict, dict]) -> list[tuple[str, str]]:
    """(knob, "top" | "bottom") for every knob of ``point`` at an edge of the grid's values."""
    out = []
    for knob, vals in knob_values(points).items():
        section, _, k = knob.partition(".")
        v = (point[0] if section == "train" else point[1]).get(k)
        if v == vals[-1]:
            out.append((knob, "top"))
        elif v == vals[0]:
            out.append((knob, "bottom"))
    return out


def beyond(vals: list, side: str):
    """The next grid value past ``side`` of the sorted ``vals``: the edge's own step repeated (a ratio for
    positive values, a difference otherwise); integers stay integers; None when there is none (a count
    that would fall below 1)."""
    a, b = (vals[-2], vals[-1]) if side == "top" else (vals[1], vals[0])
    nxt = b * (b / a) if a > 0 and b > 0 else b + (b - a)
    if all(isinstance(v, int) for v in vals):
        nxt = int(round(nxt))
        if nxt == b:
            nxt = b + (1 if side == "top" else -1)
        if nxt < 1:
            return None
    else:
        nxt = float(f"{nxt:.3g}")
    return nxt if nxt not in vals else None


def extension(points: list[tuple[dict, dict]], chosen: tuple[dict, dict]) -> tuple[dict, dict] | None:
    """One more trial for a method whose choice is ``chosen``: past the edge it sits on, or past the edge
    nearest to it when it sits inside its grid (first knob in name order), or, when no knob can move that way
    (a count at 1), past the far edge; None only for a grid with no numeric knob."""
    vals = knob_values(points)
    if not vals:
        return None
    at = edges_of(points, chosen)
    flip = {"top": "bottom", "bottom": "top"}
    # past the edge it sits on; else past the nearest edge of its other knobs; else (a count at 1 cannot go
    # lower) past the far edge, so every method still gets its one more trial
    candidates = (at + [(k, None) for k in sorted(vals) if k not in {a for a, _ in at}]
                  + [(k, flip[s]) for k, s in at])
    for knob, side in candidates:
        section, _, k = knob.partition(".")
        v = (chosen[0] if section == "train" else chosen[1]).get(k)
        if v not in vals[knob]:
            continue
        if side is None:
            i = vals[knob].index(v)
            side = "top" if len(vals[knob]) - 1 - i < i else "bottom"
        nxt = beyond(vals[knob], side)
        if nxt is None:
            continue
        t, m = dict(chosen[0]), dict(chosen[1])
        (t if section == "train" else m)[k] = nxt
        if (t, m) not in points:
            return t, m
    return None


def tuning_table(recs: list[dict], chosen: dict, trials: dict | None = None) -> str:
    metric = recs[0].get("metric", "accuracy") if recs else "accuracy"
    def flat(r):
        return {**{f"train.{k}": v for k, v in r["train_cfg"].items()}, **{f"method.{k}": v for k, v in r["method_cfg"].items()}}

    cfgs = [flat(r) for r in recs]
    # settings every trial shares (the protocol's train: section) are said once, above the table
    shared = {k: v for k, v in (cfgs[0] if cfgs else {}).items() if all(c.get(k, object()) == v for c in cfgs)}
    lines = ["every trial: " + (", ".join(f"{k}={v}" for k, v in sorted(shared.items())) or "(defaults)"), "",
             f"| method | trial | configuration | validation {metric} (last update) | selected update | chosen |", "|---|---|---|---|---|---|"]
    for r in sorted(recs, key=lambda r: (r["method"], r["trial"])):
        cfg = {k: v for k, v in flat(r).items() if k not in shared}
        text = ", ".join(f"{k}={v}" for k, v in sorted(cfg.items())) or "(defaults)"
        mark = "yes" if chosen.get(r["method"], {}).get("trial") == r["trial"] else ""
        if mark and trials and r["method"] in trials and r["trial"] < len(trials[r["method"]]):
            pts = trials[r["method"]]
            vals = knob_values(pts)
            opened, floors = [], []  # a count chosen at 1 is at its floor, not at an edge a longer grid would pass
            for k, s in edges_of(pts, pts[r["trial"]]):
                if beyond(vals[k], s) is None:
                    floors.append(f"{k} at its floor")
                else:
                    opened.append(f"{k} at the {s}")
            if opened:
                mark += " (on the grid's edge: " + ", ".join(opened) + ")"
            if floors:
                mark += " (" + ", ".join(floors) + ")"
        ups = r.get("selected_updates") or []
        kept = ", ".join(map(str, ups)) + (" (its start)" if ups == [0] and r["method"] != "none" else "") if ups else "-"
        lines.append(f"| {r['method']} | {r['trial']} | {text} | {100 * r['val_accuracy']:.1f} | {kept} | {mark} |")
    return "\n".join(lines) + (f"\n\nvalidation {metric}: of each trial's last update (the selected checkpoint was picked on "
                               "the same validation problems). selected update: the checkpoint the run's validation picked "
                               "(0: training never beat the starting policy on validation). on the grid's edge: the best "
                               "value may lie beyond the grid; tune.extend_edges adds one trial past it for every method. at its floor: a "
                               "count chosen at 1, the smallest value it can take (no grid goes past it).")


def measured_seconds(folder: Path, cells: list, cost: dict[str, list[float]]) -> None:
    """Add the seconds each finished cell of a trial sweep took (its cells.jsonl) to its method's list."""
    method = {c.id: c.method for c in cells}
    for rec in read_rows(folder / "cells.jsonl"):
        if rec.get("status") == "done" and rec.get("seconds") is not None and rec["cell"] in method:
            cost.setdefault(method[rec["cell"]], []).append(float(rec["seconds"]))


def longest_first(s: dict, cost: dict[str, list[float]]) -> dict:
    """The trial sweep with its methods ordered by their measured cost in earlier trials, the dearest (and the
    unmeasured) first: a launcher with N workers then starts the long cells early instead of leaving one running
    alone at the end of the round (longest-processing-time-first). Cell ids do not depend on the order."""
    est = {m: sum(v) / len(v) for m, v in cost.items() if v}
    order = sorted(range(len(s["methods"])), key=lambda i: (-est.get(s["methods"][i], float("inf")), i))
    return {**s, "methods": [s["methods"][i] for i in order]}


def final_spec(spec: dict, chosen: dict) -> dict:
    final = spec.get("final") or {}
    bad = set(final) - {"seeds", "eval", "timing"}
    if bad:
        raise UserError(f"tune file: unknown final key(s) {sorted(bad)}; allowed: seeds, eval, timing")
    s = {**_base(spec), "name": f"{spec.get('name', 'tune')}-final", "methods": list(chosen),
         "seeds": final.get("seeds") or [0, 1, 2], "eval": final.get("eval") or {},
         "method": {m: c["method_cfg"] for m, c in chosen.items() if c["method_cfg"]},
         "train_by_method": {m: c["tuned_train"] for m, c in chosen.items() if c["tuned_train"]}}
    if final.get("timing") is not None:
        s["timing"] = final["timing"]
    return {k: v for k, v in s.items() if v or k == "eval"}


def tune(path: str, out: str | None = None, device: str = "auto", show_progress: bool = True, launcher: str | None = None,
         jobs: int | None = None, retry_failed: bool = False, tuning_only: bool = False) -> tuple[Path, dict, list[dict]]:
    """Run both phases (resumably); returns (out folder, chosen per method, trial records). ``launcher``/``jobs``:
    where every trial's and the final phase's cells run (see ``launch.py``), over the file's ``launcher:``.
    ``retry_failed``: rerun the trial and final cells recorded as failed (as ``sweep --retry-failed``).
    ``tuning_only``: stop once the choice is made (tuning.md, final/chosen.json written), before the final phase's
    cells run; the same call without it runs them (the trials are then no-ops)."""
    from .sweep import PRESETS

    if not Path(path).exists() and (PRESETS / f"{path}.yaml").exists():
        path = str(PRESETS / f"{path}.yaml")  # a shipped protocol by name (fair-sudoku4, fair-sudoku4-quick)
    spec = load_file(path)
    where = str(path)
    trials = plan(spec, where)
    name = str(spec.get("name") or Path(path).stem)
    out_dir = Path(out or Path("results") / "tune" / name)
    specs = tune_spec(spec, trials, where)
    for s in specs:
        expand(s, where)  # every trial and its settings are checked before any of them runs
    from .launch import launcher_config
    from .outputs import Lock, claim_folder, on_interrupt, rerun_command

    launcher_config(spec, launcher, jobs, where)  # checked before any trial runs
    launch = {"launcher": launcher, "jobs": jobs, "retry_failed": retry_failed}

    claim_folder(out_dir, "tune", "--out", name=name)
    with Lock(out_dir, "tune"):
        on_interrupt(f"finished trials are kept in {out_dir}; resume with: {rerun_command()}")
        return _tune_in(spec, path, where, trials, specs, out_dir, device, show_progress, launch, tuning_only)


def _tune_in(spec, path, where, trials, specs, out_dir: Path, device, show_progress, launch, tuning_only=False):
    names = row_names(trials)  # before any trial runs: two entries whose rows could not be told apart are refused
    (out_dir / "tune.yaml").write_text(Path(path).read_text())

    cost: dict[str, list[float]] = {}  # per method, the seconds its finished trial cells took

    def run_trials(specs):
        cost.clear()  # every call walks all trials again (the finished ones are no-ops), measuring each once
        for i, s in enumerate(specs):
            s = longest_first(s, cost)
            f = out_dir / "tune" / f"trial{i}.yaml"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(yaml.safe_dump(s, sort_keys=True))
            folder = out_dir / "tune" / f"trial{i}"
            sweep(str(f), out=str(folder), device=device, show_progress=show_progress, **launch)
            measured_seconds(folder, expand(s, str(f)), cost)

    run_trials(specs)
    metric = str((spec.get("train") or {}).get("val_metric") or "accuracy")  # what each run's validation selects on, too
    recs = scores(out_dir, metric, names)
    chosen = choose(recs, trials, spec.get("train") or {})
    for _ in range(int((spec.get("tune") or {}).get("extend_edges", 0))):  # every training method: one more trial
        grew = False
        for m, points in trials.items():
            if len(points) > 1 and m in chosen:
                ext = extension(points, points[chosen[m]["trial"]])
                if ext is not None:
                    points.append(ext)
                    grew = True
        if not grew:
            break
        specs = tune_spec(spec, trials, where)
        for s in specs:
            expand(s, where)
        run_trials(specs)  # finished trials are sweeps already done: only the new cells run
        recs = scores(out_dir, metric, names)
        chosen = choose(recs, trials, spec.get("train") or {})
    (out_dir / "tuning.jsonl").write_text("".join(json.dumps({**r, "chosen": chosen.get(r["method"], {}).get("trial") == r["trial"]},
                                                             sort_keys=True) + "\n" for r in recs))
    (out_dir / "tuning.md").write_text(tuning_table(recs, chosen, trials) + "\n")
    missing = [m for m in trials if m not in chosen]
    if missing:
        raise UserError(f"tuning did not finish for {', '.join(missing)} (a failed trial?); see `lfpo-bench sweep status "
                        f"{out_dir / 'tune'}/trial<i>`, fix the cause and rerun with --retry-failed")
    fs = final_spec(spec, chosen)
    from .outputs import claim_folder

    claim_folder(out_dir / "final", "sweep", "--out", name=fs["name"])
    (out_dir / "final" / "chosen.json").write_text(json.dumps(  # table rows name each method's chosen configuration
        {m: {**{f"train.{k}": v for k, v in c["tuned_train"].items()}, **{f"method.{k}": v for k, v in c["method_cfg"].items()}}
         for m, c in chosen.items()}, indent=2, sort_keys=True))
    f = out_dir / "final.yaml"
    f.write_text(yaml.safe_dump(longest_first(fs, cost), sort_keys=True))
    if tuning_only:
        return out_dir, chosen, recs
    sweep(str(f), out=str(out_dir / "final"), device=device, show_progress=show_progress, **launch)
    return out_dir, chosen, recs
