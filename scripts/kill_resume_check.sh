#!/usr/bin/env bash
# Exact resume on the real data: a deterministic run killed with SIGKILL after its second
# checkpoint, then resumed, must end with the same weights_digest as the same run left alone.
#   scripts/kill_resume_check.sh [extra flags...]     (uses .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
logdir=$(mktemp -d)
args=(--deterministic --seed 3 --epochs 5 --logdir "$logdir" "$@")

$py -m experiments.improved "${args[@]}" --run-name whole >/dev/null 2>&1
$py -m experiments.improved "${args[@]}" --run-name killed >/dev/null 2>&1 &
pid=$!
until [ "$(ls "$logdir"/killed/checkpoints/*.index 2>/dev/null | wc -l)" -ge 2 ]; do sleep 0.05; done
kill -KILL $pid; wait $pid 2>/dev/null || true
echo "killed after: $(ls "$logdir"/killed/checkpoints/*.index | xargs -n1 basename | tr '\n' ' ')"
$py -m experiments.improved "${args[@]}" --run-name killed --resume 2>/dev/null | tail -1
digest() { $py -c "import json,sys; print(json.load(open(sys.argv[1]))['weights_digest'])" "$1"; }
whole=$(digest "$logdir/whole/results.json"); resumed=$(digest "$logdir/killed/results.json")
echo "uninterrupted: $whole"
echo "resumed:       $resumed"
rm -rf "$logdir"
[ "$whole" = "$resumed" ] && echo "SAME" || { echo "DIFFERENT"; exit 1; }
