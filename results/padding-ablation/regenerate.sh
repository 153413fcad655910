#!/usr/bin/env bash
# Regenerates results/padding-ablation/ (resumable): LFPO's count_padding off (the default) and on, 3 seeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/padding-ablation
lfpo-bench sweep --config $OUT/sweep.yaml --out $OUT/sweep
lfpo-bench table $OUT/sweep --deltas-vs "lfpo[count_padding=False]" --out $OUT/table.md
