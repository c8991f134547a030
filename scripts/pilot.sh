#!/usr/bin/env bash
# The pilot of the cpu reproduction (issue: equal steps, training to a plateau): one seed of the
# paper's Transformer (relative positions) at 17 and 70 tokens and of CRT-NCGRU at 17, up to 30
# PTB epochs under one cosine schedule, 2,800 tokens per optimiser step at every segment length,
# validation every epoch, early stopping after 3 epochs without a better validation. Its curves
# choose the cpu profile's epoch cap, schedule and patience (REPRODUCTION.md, "The pilot").
#
#   scripts/pilot.sh DATA_DIR [OUT_DIR]      # default OUT_DIR: results/cpu/pilot
#
# The three runs go side by side, one thread each; rerunning the script resumes them from their
# checkpoints, and a finished run is left as it is.
set -euo pipefail
data=${1:?usage: scripts/pilot.sh DATA_DIR [OUT_DIR]}
out=${2:-results/cpu/pilot}
mkdir -p "$out"
common=(--profile cpu --dataset ptb --data-dir "$data" --layers 3 --seed 0
        --set model.baseline_positions=relative --set data.tokens_per_step=2800
        --set optim.max_epochs=30 --set run.n_evals=30 --set run.early_stop_patience=3 --set run.bf16=false)
pids=()
for spec in "transformer 17" "transformer 70" "crt 17"; do
    set -- $spec
    rnn=(); [ "$1" = crt ] && rnn=(--rnn ncgru)
    OMP_NUM_THREADS=1 crt-repro train "${common[@]}" --model "$1" "${rnn[@]}" --seg-len "$2" \
        --out "$out/ptb-$1${rnn[1]:+-${rnn[1]}}-n$2" > "$out/ptb-$1${rnn[1]:+-${rnn[1]}}-n$2.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
crt-repro run-curves "$out"/ptb-*/ -o "$out/curves.png" -o "$out/curves.pdf" \
    --title "cpu pilot (PTB, 3 x 128, seed 0): 30-epoch cosine, 2,800 tokens per step, patience 3"
exit $status
