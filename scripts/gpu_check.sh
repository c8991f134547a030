#!/usr/bin/env bash
# The GPU check: what a session that is lent a GPU runs, within 8 minutes on one H100. A global
# deadline ($GPU_CHECK_SECONDS, default 470) caps the whole; every stage has its own limit, cut to
# the time left, so a stage that hangs costs its limit, not the lease; the script goes on and
# reports it. Stages, most wanted first:
#
#   scripts/gpu_check.sh [OUT_DIR] [--cpu]        (OUT_DIR default: $OUT, else ./gpu_check)
#
#   1. the CUDA tests: tests/test_cuda.py and the CUDA tests of the RNN cells and their scan paths
#                                                                       (limit 170 s) -> tests.txt
#   2. with 2 or more GPUs: a 2-GPU NCCL run (smoke widths) stopped by SIGTERM, as Slurm stops a
#      job, once 10 of its 40 steps are logged, resumed on 1 GPU        (limit 90 s)  -> nccl/, nccl.txt
#   3. time and kernels per optimiser step (crt-repro bench --modes train, bf16) of transformer,
#      transformer_xl, crt-gru and crt-ncgru at the paper's 16-layer widths, PTB (16 x 380,
#      batch 20) and WikiText-103 (16 x 410, batch 60, full softmax), segments 35 and 150
#                                                                 (limits 60 + 60 s) -> speed_ptb.*, speed_wt103.*
#   4. XL's attention kernels, float mask, boolean mask and FlexAttention, forward and backward at
#      heads 38 (PTB) and 41 (WikiText-103): which model.xl_attention auto should take
#                                                                       (limit 60 s)  -> attention.csv/txt
#   5. paper-width PTB 3-layer runs (seg_len 70) of the Table 2 models, $GPU_CHECK_STEPS steps each
#      (default 150), all at once on the one GPU                        (limit 70 s)  -> runs/<model>/, runs.txt
#   6. Table 6 at the paper profile (crt-repro table table6_cost)        (limit 40 s)  -> table6_paper.*
#   On one GPU the limits add up to 460 s; most stages end well before theirs.
#   and nvidia-smi.txt, environment.txt, summary.txt: everything under OUT_DIR (commit it as
#   results/paper/gpu_check/<device>/).
#
# --cpu runs every stage on the CPU at tiny sizes (the two-process stage with gloo, whatever the
# GPU count, stopped once 4 of 12 steps are logged; no Table 6, whose 16 layers at segment 150
# take many minutes there), with five times the limits and a deadline of 40 minutes: a check of
# this script and of everything it calls on a machine without a GPU, not a measurement. Without
# a GPU and without --cpu it says "no GPU" and exits 0. The PTB corpus is looked up in $CRT_REPRO_DATA, shared/data, ../shared/data and data/;
# without it stage 5 uses the generated corpus at PTB's widths (summary.txt says so).
# Python: $PYTHON, else .venv/bin/python, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT_DIR=${OUT:-gpu_check}
CPU=0
for arg in "$@"; do
    case $arg in
        --cpu) CPU=1 ;;
        -*) echo "gpu_check: unknown option $arg (usage: scripts/gpu_check.sh [OUT_DIR] [--cpu])" >&2; exit 2 ;;
        *) OUT_DIR=$arg ;;
    esac
done
STEPS=${GPU_CHECK_STEPS:-150}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
CRT=("$PY" -m crt_repro)

if ! found=$("$PY" -c 'import torch; print(torch.__version__, int(torch.cuda.is_available()), torch.cuda.device_count())' 2>/dev/null); then
    echo "gpu_check: $PY cannot import torch; set PYTHON to the project's environment" >&2
    exit 1
fi
read -r torch_version has_cuda n_gpus <<<"$found"
mkdir -p "$OUT_DIR"
if [ "$has_cuda" != 1 ] && [ "$CPU" = 0 ]; then
    echo "gpu_check: no GPU (torch $torch_version sees no CUDA device); nothing checked" | tee "$OUT_DIR/summary.txt"
    exit 0
fi
DEV=cuda SCALE=1 budget=470 ddp_steps=40 ddp_stop=10
[ "$CPU" = 1 ] && DEV=cpu SCALE=5 budget=2400 ddp_steps=12 ddp_stop=4
DEADLINE=$((SECONDS + ${GPU_CHECK_SECONDS:-$budget}))

OUT_DIR=$(cd "$OUT_DIR" && pwd)
: > "$OUT_DIR/summary.txt"
status=0
stage() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT_DIR/summary.txt"; }
note() { echo "   $*" | tee -a "$OUT_DIR/summary.txt"; }
fail() { note "FAILED: $*"; status=1; }
# The limit of a stage: its own (x SCALE), or what is left of the global deadline when that is less.
limit() { local own=$(($1 * SCALE)) left=$((DEADLINE - SECONDS)); echo $((own < left ? own : left)); }
# True when a stage still has time to start (10 s or more left).
time_left() { if [ $((DEADLINE - SECONDS)) -ge 10 ]; then return 0; fi; note "skipped: the global deadline is near"; status=1; return 1; }
show() {  # a result file into the summary, or the last line of its error file
    if [ -s "$OUT_DIR/$1.txt" ]; then sed 's/^/   /' "$OUT_DIR/$1.txt" | tee -a "$OUT_DIR/summary.txt"
    else note "$1: no table; last error line: $(tail -n 1 "$OUT_DIR/$1.err" 2>/dev/null)"; fi
}

stage "environment ($DEV)"
if [ "$DEV" = cuda ]; then nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true; fi
"$PY" - "$DEV" > "$OUT_DIR/environment.txt" 2>&1 <<'EOF'
import os, sys, torch
if sys.argv[1] == "cuda":
    p = torch.cuda.get_device_properties(0)
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {p.name}, "
          f"{p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
else:
    print(f"torch {torch.__version__}, CPU ({os.cpu_count()} cores): the --cpu smoke run, no measurement")
EOF
note "$(cat "$OUT_DIR/environment.txt")"

stage "1. CUDA tests (limit 170 s; the first FlexAttention and torch.compile calls compile kernels)"
if time_left; then
    timeout "$(limit 170)" "$PY" -m pytest -q -p no:cacheprovider --durations=10 -k cuda tests/test_cuda.py \
        tests/test_rnn.py tests/test_scan.py > "$OUT_DIR/tests.txt" 2>&1
    rc=$?
    note "pytest exit $rc: $(tail -n 1 "$OUT_DIR/tests.txt")"
    [ "$rc" = 0 ] || status=1
fi

stage "2. two processes stopped by SIGTERM, resumed in one (limit 90 s)"
if [ "$DEV" = cuda ] && [ "$n_gpus" -lt 2 ]; then
    note "skipped: $n_gpus GPU (the NCCL run needs 2)"
elif time_left; then
    dir=$OUT_DIR/nccl
    rm -rf "$dir" && mkdir -p "$dir"
    end=$((SECONDS + $(limit 90)))
    run=(train --profile smoke --dataset synthetic --model crt --rnn ncgru --layers 2 --seg-len 35 --device "$DEV"
         --set optim.max_steps=$ddp_steps --set run.checkpoint_every=2 --set run.log_every=1 --set run.n_evals=1
         --out "$dir/run")
    # timeout leads a process group of its own: the CLI, torchrun and the ranks.
    timeout $((end - SECONDS)) "${CRT[@]}" "${run[@]}" --nproc 2 > "$dir/two.log" 2>&1 &
    pid=$!
    # Stop it as Slurm stops a job, SIGTERM to every process, once $ddp_stop steps are logged; the
    # ranks checkpoint at the end of their step. The resume waits until the whole group is gone.
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(grep -v '"split"' "$dir/run/log.jsonl" 2>/dev/null | grep -c '"loss"')" -ge "$ddp_stop" ]; then
            kill -TERM -- "-$pid"; break
        fi
        sleep 0.2
    done
    wait "$pid"
    rc=$?
    while kill -0 -- "-$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    note "2 processes: exit $rc (143: stopped by SIGTERM): $(grep -h "stopped by SIGTERM" "$dir/two.log" | tail -n 1)"
    if [ $((end - SECONDS)) -gt 0 ]; then
        timeout $((end - SECONDS)) "${CRT[@]}" "${run[@]}" --nproc 1 > "$dir/one.log" 2>&1
        note "resumed in 1 process: exit $?"
    fi
    "$PY" - "$dir/run" > "$OUT_DIR/nccl.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
steps = [e["step"] for e in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "split" not in e]
m = json.loads((run / "metrics.json").read_text())
ok = steps == list(range(1, m["planned_steps"] + 1)) and m["steps"] == m["planned_steps"] and m["processes"] == 1
print(f"steps logged {steps[0]}..{steps[-1]} ({len(steps)}, each once: {len(set(steps)) == len(steps)}), "
      f"finished in {m['processes']} process on {m['device']}, valid loss {m['valid_loss']:.4f}: {'ok' if ok else 'WRONG'}")
sys.exit(0 if ok else 1)
EOF
    [ $? = 0 ] || status=1
    sed 's/^/   /' "$OUT_DIR/nccl.txt" | tee -a "$OUT_DIR/summary.txt"
fi

stage "3. time and kernels per optimiser step at the paper's 16-layer widths, segments 35 and 150 (limits 60 + 60 s)"
if [ "$DEV" = cuda ]; then
    speed=(ptb "--d-model 380 --n-head 10 --d-inner 900 --vocab 10000 --batch 20 --seg-lens 35 150"
           wt103 "--d-model 410 --n-head 10 --d-inner 2100 --vocab 267735 --batch 60 --seg-lens 35 150")
    layers=16 precision=--bf16
else
    speed=(ptb "--d-model 76 --n-head 2 --d-inner 32 --vocab 50 --batch 2 --seg-lens 5 9"
           wt103 "--d-model 82 --n-head 2 --d-inner 32 --vocab 60 --batch 2 --seg-lens 5 9")
    layers=2 precision=
fi
for i in 0 2; do
    name=speed_${speed[i]}
    if time_left; then
        # shellcheck disable=SC2086  # the widths are words
        timeout "$(limit 60)" "${CRT[@]}" bench --device "$DEV" $precision --modes train --layers "$layers" ${speed[i + 1]} \
            --warmup 2 --repeats 3 --no-mem --no-macs --csv "$OUT_DIR/$name.csv" \
            > "$OUT_DIR/$name.txt" 2> "$OUT_DIR/$name.err" || fail "$name"
        show "$name"
    fi
done

stage "4. XL's attention kernels at heads 38 and 41, forward and backward (limit 60 s)"
if time_left; then
    if [ "$DEV" = cuda ]; then
        att=(--device cuda --bf16 --shape 380:10:70:70:20 --shape 410:10:150:150:60 --kernels sdpa sdpa_bool flex)
    else
        att=(--device cpu --shape 76:2:5:5:2 --shape 82:2:6:6:2 --kernels sdpa sdpa_bool --repeats 2)
    fi
    timeout "$(limit 60)" "$PY" -m crt_repro.attention_bench "${att[@]}" --csv "$OUT_DIR/attention.csv" \
        > "$OUT_DIR/attention.txt" 2> "$OUT_DIR/attention.err" || fail attention
    show attention
fi

steps=$STEPS; [ "$DEV" = cpu ] && steps=12  # the smoke profile warms up for 10 steps
stage "5. PTB 3-layer paper-width runs of the Table 2 models, $steps steps each, at once (limit 70 s)"
if time_left; then
    mkdir -p "$OUT_DIR/runs"
    DATA=""
    for d in "${CRT_REPRO_DATA:-}" shared/data ../shared/data data; do
        if [ -n "$d" ] && [ -d "$d/ptb" ]; then DATA=$(cd "$d" && pwd); break; fi
    done
    if [ "$DEV" = cpu ]; then
        profile=smoke corpus=(--dataset synthetic)
    elif [ -n "$DATA" ]; then
        profile=paper corpus=(--dataset ptb --data-dir "$DATA")
        note "PTB from $DATA"
    else
        # The generated corpus at the paper profile's PTB widths: the same arithmetic but the softmax.
        profile=paper
        corpus=(--dataset synthetic $("$PY" -c 'from crt_repro.config import build_config
m = build_config("paper", "ptb").model
print(" ".join(f"--set model.{k}={getattr(m, k)}" for k in ("d_model", "n_head", "d_inner", "dropout", "dropout_attn", "dropout_emb")))'))
        note "no PTB corpus found (CRT_REPRO_DATA, shared/data, ../shared/data, data): the generated corpus at PTB's widths"
    fi
    pids=()
    runs_limit=$(limit 70)
    for spec in transformer transformer_xl crt:ncgru; do
        model=${spec%%:*}
        rnn=(); [ "$spec" != "$model" ] && rnn=(--rnn "${spec#*:}")
        name=${spec/:/-}
        rm -rf "$OUT_DIR/runs/$name"
        timeout "$runs_limit" "${CRT[@]}" train --profile "$profile" "${corpus[@]}" --model "$model" "${rnn[@]}" --layers 3 \
            --seg-len 70 --device "$DEV" --set optim.max_steps="$steps" --set run.n_evals=0 --set run.log_every=20 \
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
fi

stage "6. Table 6 (16-layer WikiText-103 models, seg/memory 150, adaptive softmax) (limit 40 s)"
if [ "$DEV" = cpu ]; then
    # 16 layers at segment 150 even at smoke widths: many minutes on a CPU (tests/test_bench.py runs it small)
    note "skipped on the CPU"
elif time_left; then
    timeout "$(limit 40)" "${CRT[@]}" table table6_cost --profile paper --csv "$OUT_DIR/table6_paper.csv" \
        --md "$OUT_DIR/table6_paper.md" > /dev/null 2> "$OUT_DIR/table6_paper.err" || fail table6
    cp "$OUT_DIR/table6_paper.md" "$OUT_DIR/table6_paper.txt" 2>/dev/null
    show table6_paper
fi

stage "done in $SECONDS s: exit $status; everything is under $OUT_DIR"
exit "$status"
