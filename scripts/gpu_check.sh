#!/usr/bin/env bash
# The GPU check: what a session that is lent one GPU runs, in at most 8 minutes (the stage limits
# add up to 470 s; most stages end well before theirs).
#
#   scripts/gpu_check.sh [OUT_DIR]        (OUT_DIR default: $OUT, else ./gpu_check)
#
#   1. the CUDA tests: tests/test_cuda.py and the CUDA tests of the RNN cells    -> tests.txt
#   2. a paper-width PTB 3-layer run (seg_len 70) of every Table 2 model, $GPU_CHECK_STEPS steps
#      each (default 150), all at once on the one GPU                             -> runs/<model>/, runs.txt
#   3. `crt-repro bench` on CUDA at the paper's widths, bf16 (Table 6 on a GPU):
#      PTB 3 x 380 and WT103 16 x 410 (full softmax), then `crt-repro table table6_cost
#      --profile paper` (adaptive softmax)                                -> bench_*.csv/txt, table6_paper.*
#   and nvidia-smi.txt, environment.txt, summary.txt. Every stage has its own time limit, so a
#   stage that hangs costs its limit, not the lease; the script goes on and reports it.
#
# Without a GPU it says "no GPU" and exits 0. The PTB corpus is looked up in $CRT_REPRO_DATA,
# shared/data, ../shared/data and data/; without it the runs use the generated corpus at PTB's
# widths (and summary.txt says so). Python: $PYTHON, else .venv/bin/python, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT_DIR=${1:-${OUT:-gpu_check}}
STEPS=${GPU_CHECK_STEPS:-150}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
CRT=("$PY" -m crt_repro)

if ! found=$("$PY" -c 'import torch; print(torch.__version__, int(torch.cuda.is_available()))' 2>/dev/null); then
    echo "gpu_check: $PY cannot import torch; set PYTHON to the project's environment" >&2
    exit 1
fi
read -r torch_version has_cuda <<<"$found"
mkdir -p "$OUT_DIR"
if [ "$has_cuda" != 1 ]; then
    echo "gpu_check: no GPU (torch $torch_version sees no CUDA device); nothing checked" | tee "$OUT_DIR/summary.txt"
    exit 0
fi

mkdir -p "$OUT_DIR/runs"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
status=0
stage() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT_DIR/summary.txt"; }
note() { echo "   $*" | tee -a "$OUT_DIR/summary.txt"; }

stage "environment"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
"$PY" - > "$OUT_DIR/environment.txt" 2>&1 <<'EOF'
import torch
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {p.name}, "
      f"{p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
EOF
note "$(cat "$OUT_DIR/environment.txt")"

stage "1. CUDA tests (limit 170 s; the first FlexAttention and torch.compile calls compile kernels)"
timeout 170 "$PY" -m pytest -q -p no:cacheprovider --durations=10 -k cuda tests/test_cuda.py tests/test_rnn.py \
    > "$OUT_DIR/tests.txt" 2>&1
rc=$?
note "pytest exit $rc: $(tail -n 1 "$OUT_DIR/tests.txt")"
[ "$rc" = 0 ] || status=1

stage "2. PTB 3-layer paper-width runs of the Table 2 models, $STEPS steps each, at once (limit 110 s)"
DATA=""
for d in "${CRT_REPRO_DATA:-}" shared/data ../shared/data data; do
    if [ -n "$d" ] && [ -d "$d/ptb" ]; then DATA=$(cd "$d" && pwd); break; fi
done
if [ -n "$DATA" ]; then
    corpus=(--dataset ptb --data-dir "$DATA")
    note "PTB from $DATA"
else
    # The generated corpus at the paper profile's PTB widths: the same arithmetic but the softmax.
    corpus=(--dataset synthetic $("$PY" -c 'from crt_repro.config import build_config
m = build_config("paper", "ptb").model
print(" ".join(f"--set model.{k}={getattr(m, k)}" for k in ("d_model", "n_head", "d_inner", "dropout", "dropout_attn", "dropout_emb")))'))
    note "no PTB corpus found (CRT_REPRO_DATA, shared/data, ../shared/data, data): the generated corpus at PTB's widths"
fi
pids=()
for spec in transformer transformer_xl crt:ncgru; do
    model=${spec%%:*}
    rnn=(); [ "$spec" != "$model" ] && rnn=(--rnn "${spec#*:}")
    name=${spec/:/-}
    timeout 110 "${CRT[@]}" train --profile paper "${corpus[@]}" --model "$model" "${rnn[@]}" --layers 3 --seg-len 70 \
        --device cuda --set optim.max_steps="$STEPS" --set run.n_evals=0 --set run.log_every=20 \
        --set run.checkpoint_every=100000 --set data.max_eval_segments=50 \
        --out "$OUT_DIR/runs/$name" > "$OUT_DIR/runs/$name.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
"$PY" - "$OUT_DIR" > "$OUT_DIR/runs.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
print(f"{'model':<16} {'steps':>5} {'params':>10} {'tok/s':>9} {'peak MiB':>9} {'valid ppl':>9} {'test ppl':>9}  precision")
for log in sorted(Path(sys.argv[1], "runs").glob("*.log")):
    m = log.with_suffix("") / "metrics.json"
    if not m.exists():
        tail = log.read_text().strip().splitlines()[-1:] or ["(empty log)"]
        print(f"{log.stem:<16} no metrics.json: {tail[0][:200]}")
        continue
    r = json.loads(m.read_text())
    print(f"{log.stem:<16} {r['steps']:>5} {r['params']:>10,} {r['train_tokens_per_s']:>9.0f} {r['peak_mem_mb']:>9.0f} "
          f"{r['valid_ppl']:>9.2f} {r['test_ppl']:>9.2f}  {r['precision']}")
EOF
sed 's/^/   /' "$OUT_DIR/runs.txt" | tee -a "$OUT_DIR/summary.txt"

stage "3. crt-repro bench on CUDA at the paper's widths, bf16, and Table 6 (limits 60 s + 70 s + 60 s)"
timeout 60 "${CRT[@]}" bench --device cuda --bf16 --layers 3 --d-model 380 --n-head 10 --d-inner 900 --vocab 10000 \
    --batch 20 --seg-lens 17 35 70 --repeats 5 --csv "$OUT_DIR/bench_ptb_3x380.csv" \
    > "$OUT_DIR/bench_ptb_3x380.txt" 2> "$OUT_DIR/bench_ptb_3x380.err" || status=1
timeout 70 "${CRT[@]}" bench --device cuda --bf16 --layers 16 --d-model 410 --n-head 10 --d-inner 2100 \
    --vocab 267735 --batch 60 --seg-lens 35 70 150 --modes train forward --repeats 3 \
    --csv "$OUT_DIR/bench_wt103_16x410.csv" \
    > "$OUT_DIR/bench_wt103_16x410.txt" 2> "$OUT_DIR/bench_wt103_16x410.err" || status=1
# Table 6 itself: the paper profile's 16 x 410 WikiText-103 models (adaptive softmax), seg/memory 150.
timeout 60 "${CRT[@]}" table table6_cost --profile paper --csv "$OUT_DIR/table6_paper.csv" \
    --md "$OUT_DIR/table6_paper.md" > /dev/null 2> "$OUT_DIR/table6_paper.err" || status=1
cp "$OUT_DIR/table6_paper.md" "$OUT_DIR/table6_paper.txt" 2>/dev/null
for b in bench_ptb_3x380 bench_wt103_16x410 table6_paper; do
    note "$b:"
    if [ -s "$OUT_DIR/$b.txt" ]; then sed 's/^/   /' "$OUT_DIR/$b.txt" | tee -a "$OUT_DIR/summary.txt"
    else note "  no table; last error line: $(tail -n 1 "$OUT_DIR/$b.err")"; fi
done

stage "done: exit $status; everything is under $OUT_DIR"
exit "$status"
