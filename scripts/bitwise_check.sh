#!/usr/bin/env bash
# The bitwise training check for refactors that must not change numbers (issue 27): each language
# model trains 15 smoke steps on the generated corpus, one thread, a loss line every step; prints
# one md5 of the loss lines per model (fp32: bf16 would make it depend on the CPU). Run it before and after a change: the lines must be equal.
#   bash scripts/bitwise_check.sh [OUT_DIR]
set -euo pipefail
command -v crt-repro >/dev/null || { echo "bitwise_check: crt-repro is not on PATH (activate the venv)" >&2; exit 1; }
out=${1:-$(mktemp -d)}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run() {  # label, then crt-repro train arguments
  local label=$1; shift
  crt-repro train --profile smoke --dataset synthetic --layers 2 --seg-len 16 --seed 0 --device cpu \
    --set optim.max_steps=15 --set run.log_every=1 --set run.n_evals=1 --set run.bf16=false "$@" --out "$out/$label" >/dev/null 2>&1
  printf '%-24s %s\n' "$label" "$(python -c 'import json,sys
print("\n".join(repr(json.loads(l)["loss"]) for l in open(sys.argv[1]) if "\"loss\"" in l and "\"split\"" not in l))' \
    "$out/$label/log.jsonl" | md5sum | cut -d" " -f1)"
}
run transformer-relative --model transformer
run transformer-absolute --model transformer --set model.baseline_positions=absolute
run transformer_xl --model transformer_xl
run crt-gru --model crt --rnn gru
run crt-ncgru --model crt --rnn ncgru
run transformer_rnn_memory --model transformer_rnn_memory
run transformer_rnn_posenc --model transformer_rnn_posenc
run rmt --model rmt
