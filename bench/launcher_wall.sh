#!/usr/bin/env bash
# Wall time of the same sweep work inline vs through the local launcher (--launcher local --jobs N), measured
# in one session, and the check that both give the same rows. Default work: results/reference/regenerate.sh
# --quick --part PART (seconds-long cells); --sweep FILE times one sweep file instead (bench/launcher_wall.yaml:
# four full-size training cells).
#   bash bench/launcher_wall.sh [--jobs N] [--part PART]... [--all] [--sweep FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=2; parts=(); all=0; sweep_file=""
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) shift; jobs=$1 ;;
    --part) shift; parts+=(--part "$1") ;;
    --all) all=1 ;;
    --sweep) shift; sweep_file=$1 ;;
    *) echo "launcher_wall.sh: unknown option $1 (--jobs N, --part PART, --all, --sweep FILE)" >&2; exit 2 ;;
  esac
  shift
done
[ "$all" = 1 ] || [ ${#parts[@]} -gt 0 ] || parts=(--part toy-code)
tmp=$(mktemp -d /tmp/lfpo-launcher-wall.XXXXXX)
export LFPO_BENCH_PROGRESS=0
# the embedded default of each task is pretrained on first use: do that before either timing, not inside the first
if [ -n "$sweep_file" ]; then
  want=$(python -c "import sys, yaml; print(' '.join(yaml.safe_load(open(sys.argv[1]))['tasks']))" "$sweep_file")
else
  want=$([ "$all" = 1 ] && echo "sudoku4 countdown3-mini toy-code" || printf '%s\n' "${parts[@]}" | grep -v -- --part | sed 's/^ablation$/sudoku4/')
fi
python -c "import sys; from lfpo_bench.pretrain import ensure_tiny; [ensure_tiny(t) for t in sys.argv[1:]]" $want
work() {  # $1: output folder, then the launcher options
  local out=$1; shift
  if [ -n "$sweep_file" ]; then lfpo-bench sweep --config "$sweep_file" --out "$out" "$@"
  else bash results/reference/regenerate.sh --quick ${parts[@]+"${parts[@]}"} "$@" "$out"; fi
}
t0=$(date +%s); work "$tmp/inline" --launcher inline > "$tmp/inline.log" 2>&1; t1=$(date +%s)
work "$tmp/local" --launcher local --jobs "$jobs" > "$tmp/local.log" 2>&1; t2=$(date +%s)
python - "$tmp" "$((t1 - t0))" "$((t2 - t1))" "$jobs" <<'PY'
import json, sys
from pathlib import Path
tmp, a, b, jobs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
VOL = {"device", "tokens_per_s", "checkpoint", "created", "latency_ms_p50", "latency_ms_p95", "timing"}
def rows(root):
    out = {}
    for f in sorted(root.rglob("rows.jsonl")):
        if "/runs/" in str(f):
            continue
        for line in f.read_text().splitlines():
            r = json.loads(line)
            out[(str(f.relative_to(root)), r["cell"], r["stage"], r["config_hash"])] = {k: v for k, v in r.items() if k not in VOL}
    return out
ra, rb = rows(tmp / "inline"), rows(tmp / "local")
same = ra.keys() == rb.keys() and all(ra[k] == rb[k] for k in ra)
print("| launcher | wall time | ratio to inline |\n|---|---|---|")
print(f"| inline | {a} s | 1.00x |")
print(f"| local --jobs {jobs} | {b} s | {b / a:.2f}x |")
print(f"rows: {len(ra)} inline, {len(rb)} local; identical apart from device/latency fields: {same}")
PY
echo "logs and folders in $tmp"
