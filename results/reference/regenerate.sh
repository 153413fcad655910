#!/usr/bin/env bash
# Regenerate the reference set (the tuned comparison on three tasks and the LFPO ablation) into a new folder.
#   bash results/reference/regenerate.sh [--quick] [--part NAME]... [--launcher inline|local|slurm] [--jobs N]
#                                        [--retry-failed] [--tuning-only] [--tables] [OUT]
# Parts: sudoku4, countdown3-mini, toy-code (the fair protocol, lfpo_bench/presets/fair-<task>.yaml) and
# ablation (lfpo-ablation-sudoku4 from the configuration the sudoku4 tuning chose for LFPO, so it runs after
# sudoku4). Default: all four, in that order. Every part resumes: run the same command again (cells stopped with
# an earlier run are resubmitted and continue from their last checkpoint; cells that failed while watched are
# rerun only with --retry-failed).
# --quick runs the fair-<task>-quick presets and a shrunk ablation (a smoke test of the protocol).
# --tuning-only: each task part stops once its choice is made (tuning.md, final/chosen.json), before its final
# phase (the default parts are then the three tasks); the same command without it runs the finals. A final phase's
# timing pass needs the weights of all its cells, so run it where they stay (one machine, one session).
# --tables: run nothing; render each finished part's tables (and the combined ones) again from its rows, with
# this checkout's `lfpo-bench table` (publish.py refuses tables an older checkout rendered: run this first).
# --launcher/--jobs: where the cells run (docs/sweeps.md "On a cluster"); the default is the local launcher with
# 2 workers (this machine's 2 cores, one torch thread each). Each part's wall time goes to OUT/parts.log.
set -euo pipefail
tasks=(sudoku4 countdown3-mini toy-code)
tables=(table table-vs-lfpo table-match table-last)  # each task part's final tables, combined across tasks at the end
quick=""; parts=(); out=""; launch=(); retry=(); only=(); render_only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="-quick" ;;
    --part) shift; parts+=("$1") ;;
    --launcher|--jobs) launch+=("$1" "$2"); shift ;;
    --retry-failed) retry=(--retry-failed) ;;
    --tuning-only) only=(--tuning-only) ;;
    --tables) render_only=1 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    -*) echo "regenerate.sh: unknown option $1 (--quick, --part NAME, --launcher KIND, --jobs N, --retry-failed, --tuning-only, --tables, OUT)" >&2; exit 2 ;;
    *) out="$1" ;;
  esac
  shift
done
if [ ${#parts[@]} -eq 0 ]; then
  parts=("${tasks[@]}"); [ ${#only[@]} -gt 0 ] || parts+=(ablation)
fi
[ ${#launch[@]} -gt 0 ] || launch=(--launcher local --jobs 2)
# the metric a part is compared on: its protocol's train.val_metric (sudoku4: solved), else the task score
metric() { python -c "import sys, yaml; from lfpo_bench.sweep import PRESETS
print((yaml.safe_load((PRESETS / (sys.argv[1] + '.yaml')).read_text()).get('train') or {}).get('val_metric') or 'accuracy')" "$1"; }
out="${out:-results/rerun$quick}"
# a task part's final tables, from its rows: paired tests against the start; against LFPO with the equal-accuracy
# view at the accuracy every method reaches; LFPO's fewest steps to each method's best, tested; every run's last update
task_tables() {
  local p="$1" m; m=$(metric "fair-$p$quick")
  lfpo-bench table "$out/fair-$p/final" --metric "$m" --paired-vs none --out "$out/fair-$p/table.md" > /dev/null
  lfpo-bench table "$out/fair-$p/final" --metric "$m" --paired-vs lfpo --target auto --baseline lfpo \
    --out "$out/fair-$p/table-vs-lfpo.md" > /dev/null
  lfpo-bench table "$out/fair-$p/final" --metric "$m" --target match --baseline lfpo --out "$out/fair-$p/table-match.md" > /dev/null
  lfpo-bench table "$out/fair-$p/final" --metric "$m" --stage last --paired-vs none --out "$out/fair-$p/table-last.md" > /dev/null
}
# the ablation's table: each variant against the tuned base, the first variant of the sweep file written below
ablation_table() {
  local base; base=$(python -c "import sys, yaml; v = yaml.safe_load(open(sys.argv[1]))['method']['lfpo'][0]
print('lfpo[' + ','.join(f'{k}={x}' for k, x in sorted(v.items())) + ']')" "$out/lfpo-ablation.yaml")
  lfpo-bench table "$out/lfpo-ablation" --metric "$(metric lfpo-ablation-sudoku4)" --deltas-vs "$base" \
    --out "$out/lfpo-ablation/table.md" > /dev/null
}
if [ -n "$render_only" ]; then
  [ -d "$out" ] || { echo "regenerate.sh --tables: $out is not a folder regenerate.sh wrote" >&2; exit 2; }
  for p in "${parts[@]}"; do
    case "$p" in
      sudoku4|countdown3-mini|toy-code)
        if [ -f "$out/fair-$p/final/rows.jsonl" ] && [ -f "$out/fair-$p/table.md" ]; then task_tables "$p"; echo "tables: $p rendered again"
        else echo "tables: $p has no finished final phase in $out; skipped"; fi ;;
      ablation)
        if [ -f "$out/lfpo-ablation/table.md" ] && [ -f "$out/lfpo-ablation.yaml" ]; then
          ablation_table; echo "tables: ablation rendered again"
        else echo "tables: the ablation has not finished in $out; skipped"; fi ;;
      *) echo "regenerate.sh: unknown part $p (sudoku4, countdown3-mini, toy-code, ablation)" >&2; exit 2 ;;
    esac
  done
  parts=()
fi
mkdir -p "$out"
for p in "${parts[@]}"; do
  start=$(date +%s)
  case "$p" in
    sudoku4|countdown3-mini|toy-code)
      lfpo-bench tune --config "fair-$p$quick" --out "$out/fair-$p" "${launch[@]}" ${retry[@]+"${retry[@]}"} ${only[@]+"${only[@]}"}
      if [ ${#only[@]} -gt 0 ]; then echo "part $p (tuning only) done in $(( $(date +%s) - start )) s" | tee -a "$out/parts.log"; continue; fi
      task_tables "$p" ;;
    ablation)
      [ -f "$out/fair-sudoku4/final/chosen.json" ] || { echo "regenerate.sh: the ablation starts from the sudoku4 tuning's choice; run --part sudoku4 first" >&2; exit 2; }
      python - "$out" "$quick" <<'PY'  # writes the ablation sweep file
import json, sys
from pathlib import Path
import yaml
from lfpo_bench.sweep import PRESETS
out, quick = Path(sys.argv[1]), sys.argv[2]
chosen = json.loads((out / "fair-sudoku4" / "final" / "chosen.json").read_text())["lfpo"]
spec = yaml.safe_load((PRESETS / "lfpo-ablation-sudoku4.yaml").read_text())
spec["train"].update({k.split(".", 1)[1]: v for k, v in chosen.items() if k.startswith("train.")})
variants = []
for v in spec["method"]["lfpo"]:  # each variant changes its own knobs from the tuned LFPO; one equal to the base goes
    v = {**{k.split(".", 1)[1]: x for k, x in chosen.items() if k.startswith("method.")}, **v}
    if v not in variants:
        variants.append(v)
spec["method"]["lfpo"] = variants
if quick:  # the same variants, one seed, shrunk like the fair-*-quick presets
    spec["name"] += "-quick"
    spec["seeds"] = [0]
    spec["train"].update(updates=1, val_every=1, val_limit=20)
    spec["eval"] = {**spec["eval"], "steps": [1, 4], "limit": 30}
f = out / "lfpo-ablation.yaml"
f.write_text("# written by regenerate.sh: lfpo-ablation-sudoku4 from the sudoku4 tuning's choice for LFPO\n"
             + yaml.safe_dump(spec, sort_keys=False))
PY
      lfpo-bench sweep --config "$out/lfpo-ablation.yaml" --out "$out/lfpo-ablation" "${launch[@]}" ${retry[@]+"${retry[@]}"}
      ablation_table ;;
    *) echo "regenerate.sh: unknown part $p (sudoku4, countdown3-mini, toy-code, ablation)" >&2; exit 2 ;;
  esac
  echo "part $p done in $(( $(date +%s) - start )) s" | tee -a "$out/parts.log"
done
# the combined tables need every task's final tables: a task only tuned (--tuning-only) has a final/ folder with
# its choice in it, and no tables yet
missing=()
for t in "${tasks[@]}"; do
  for v in "${tables[@]}"; do [ -f "$out/fair-$t/$v.md" ] || { missing+=("$t"); break; }; done
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "combined tables: not written yet (no final tables for ${missing[*]}: run regenerate.sh without --tuning-only on $out)"
else
  for v in "${tables[@]}"; do  # one table per task: each is read on its own metric
    for t in "${tasks[@]}"; do echo "## $t"; echo; cat "$out/fair-$t/$v.md"; echo; done > "$out/$v.md"
  done
  echo "combined tables: $out/table.md (paired tests against none), $out/table-vs-lfpo.md (against LFPO)," \
    "$out/table-last.md (every run's last update, against none); to commit them: python results/reference/publish.py $out"
fi
