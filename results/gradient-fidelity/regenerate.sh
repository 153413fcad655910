#!/usr/bin/env bash
# Regenerates results/gradient-fidelity/ on 2 cores (resumable: finished parts are kept; see README.md here
# for the time per part).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/gradient-fidelity
RUNS=$OUT/runs
# mid-training checkpoints: the policy after 20 updates of diffu-GRPO from the embedded start (last, not best)
for t in countdown3-mini sudoku4; do
  [ -d "$RUNS/mid-$t/checkpoint" ] || lfpo-bench run --method diffu_grpo --task "$t" --updates 20 --limit 20 --steps 4 --set train.select=last \
      --out-dir "$RUNS" --run-id "mid-$t"
done
# task, model, reference trajectories per prompt (enough for a split-half cosine >= 0.99), name. g* is kept in
# runs/NAME.ref.pt: a method added later is measured against the same g* with
#   lfpo-bench gradcheck ...same options... --methods NEW --ref-cache $RUNS/NAME.ref.pt --add --out $OUT/NAME.json
gc() { [ -f "$OUT/$4.json" ] || lfpo-bench gradcheck --task "$1" --model "$2" --prompts 4 --batches 128 --ref-samples "$3" \
          --ref-cache "$RUNS/$4.ref.pt" --out "$OUT/$4.json"; }
gc countdown3-mini tiny 4096 countdown3-mini-start
gc countdown3-mini "$RUNS/mid-countdown3-mini/checkpoint" 4096 countdown3-mini-mid
gc sudoku4 tiny 24576 sudoku4-start
gc sudoku4 "$RUNS/mid-sudoku4/checkpoint" 24576 sudoku4-mid
python -m lfpo_bench.gradcheck "$OUT"  # table.md and fidelity.png
