#!/usr/bin/env bash
# Regenerate the reference set (the tuned comparison on three tasks and the LFPO ablation) into a new folder.
#   bash results/reference/regenerate.sh [--quick] [--part NAME]... [--launcher inline|local|slurm] [--jobs N] [OUT]
# Parts: sudoku4, countdown3-mini, toy-code (the fair protocol, lfpo_bench/presets/fair-<task>.yaml) and
# ablation (lfpo-ablation-sudoku4 at the learning rate the sudoku4 tuning chose for LFPO, so it runs after
# sudoku4). Default: all four, in that order. Every part resumes: run the same command again.
# --quick runs the fair-<task>-quick presets and a shrunk ablation (a smoke test of the protocol, ~30 min).
# --launcher/--jobs: where the cells run (docs/sweeps.md "On a cluster"); the default is inline.
# Parts can run side by side (e.g. `--part toy-code --part countdown3-mini` in one shell, `--part sudoku4
# --part ablation` in another); the committed set was made that way with OMP_NUM_THREADS=1 per shell.
set -euo pipefail
quick=""; parts=(); out=""; launch=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick="-quick" ;;
    --part) shift; parts+=("$1") ;;
    --launcher|--jobs) launch+=("$1" "$2"); shift ;;
    -h|--help) sed -n 2,10p "$0"; exit 0 ;;
    -*) echo "regenerate.sh: unknown option $1 (--quick, --part NAME, --launcher KIND, --jobs N, OUT)" >&2; exit 2 ;;
    *) out="$1" ;;
  esac
  shift
done
[ ${#parts[@]} -gt 0 ] || parts=(sudoku4 countdown3-mini toy-code ablation)
out="${out:-results/rerun$quick}"
mkdir -p "$out"
for p in "${parts[@]}"; do
  start=$(date +%s)
  case "$p" in
    sudoku4|countdown3-mini|toy-code)
      lfpo-bench tune --config "fair-$p$quick" --out "$out/fair-$p" ${launch[@]+"${launch[@]}"}
      lfpo-bench table "$out/fair-$p/final" --paired-vs none --out "$out/fair-$p/table.md" > /dev/null ;;
    ablation)
      [ -f "$out/fair-sudoku4/final/chosen.json" ] || { echo "regenerate.sh: the ablation starts from the sudoku4 tuning's choice; run --part sudoku4 first" >&2; exit 2; }
      python - "$out" "$quick" <<'PY'
import json, sys
from pathlib import Path
import yaml
from lfpo_bench.sweep import PRESETS
out, quick = Path(sys.argv[1]), sys.argv[2]
chosen = json.loads((out / "fair-sudoku4" / "final" / "chosen.json").read_text())["lfpo"]
spec = yaml.safe_load((PRESETS / "lfpo-ablation-sudoku4.yaml").read_text())
spec["train"].update({k.split(".", 1)[1]: v for k, v in chosen.items() if k.startswith("train.")})
for v in spec["method"]["lfpo"]:
    v.update({k.split(".", 1)[1]: x for k, x in chosen.items() if k.startswith("method.") and k.split(".", 1)[1] not in v})
if quick:  # the same variants and seeds, shrunk like the fair-*-quick presets
    spec["name"] += "-quick"
    spec["train"].update(updates=4, val_every=2, val_limit=50)
    spec["eval"] = {"steps": [1, 4], "limit": 100}
f = out / "lfpo-ablation.yaml"
f.write_text("# written by regenerate.sh: lfpo-ablation-sudoku4 at the sudoku4 tuning's choice for LFPO\n"
             + yaml.safe_dump(spec, sort_keys=False))
PY
      lfpo-bench sweep --config "$out/lfpo-ablation.yaml" --out "$out/lfpo-ablation" ${launch[@]+"${launch[@]}"}
      lfpo-bench table "$out/lfpo-ablation" --deltas-vs "lfpo[remasking=low_confidence,temperature=0.9]" \
        --out "$out/lfpo-ablation/table.md" > /dev/null ;;
    *) echo "regenerate.sh: unknown part $p (sudoku4, countdown3-mini, toy-code, ablation)" >&2; exit 2 ;;
  esac
  echo "part $p done in $(( $(date +%s) - start )) s" | tee -a "$out/parts.log"
done
if [ -d "$out/fair-sudoku4/final" ] && [ -d "$out/fair-countdown3-mini/final" ] && [ -d "$out/fair-toy-code/final" ]; then
  lfpo-bench table "$out"/fair-*/final --paired-vs none --out "$out/table.md" > /dev/null
  lfpo-bench table "$out"/fair-*/final --paired-vs lfpo --out "$out/table-vs-lfpo.md" > /dev/null
  echo "combined tables: $out/table.md (paired tests against none), $out/table-vs-lfpo.md (against LFPO)"
fi
