#!/usr/bin/env bash
# Start or resume the decisive cpu reproduction (REPRODUCTION.md) from a worktree of its launch
# commit, so that code changed on main since never touches its runs. Run it from this checkout
# with its venv active; rerun it after a kill, on this machine or a fresh one.
#   [RUN_THREADS=2] bash scripts/resume_reproduction.sh DATA_DIR [WORKTREE] [LAUNCH_COMMIT]
# - makes the worktree (default ../repro, at 0bb85a8) where it is missing, and refuses one at
#   another commit;
# - copies into it the finished runs committed here that it lacks (scripts/commit_finished_runs.sh
#   commits them from there), so that a fresh machine trains none of them again;
# - restores the started runs scripts/park_started_runs.sh parked in git, where it lacks them;
# - unlocks the workflow a kill left locked, then runs it two single-thread runs at a time, the
#   runs a kill left with a checkpoint first (they resume from it). RUN_THREADS=2 runs one run on
#   both cores instead: 1.5-1.7x faster per run (REPRODUCTION.md: speed, status), so that one
#   run still ends before a known cut where two single-thread ones would both be cut halfway. A
#   run's numbers do not depend on it beyond fp32 rounding, and its id not at all.
set -euo pipefail
main=$(cd "$(dirname "$0")/.." && pwd)
data=$(cd "${1:?the data directory, e.g. ../shared/data}" && pwd)
tree=${2:-$main/../repro}
launch=$(git -C "$main" rev-parse --verify "${3:-0bb85a8}^{commit}")
command -v crt-repro >/dev/null || { echo "resume_reproduction: crt-repro is not on PATH (activate the venv)" >&2; exit 1; }
[ -d "$tree" ] || git -C "$main" worktree add --detach "$tree" "$launch"
at=$(git -C "$tree" rev-parse HEAD)
[ "$at" = "$launch" ] || { echo "resume_reproduction: $tree is at ${at:0:7}, not the launch commit ${launch:0:7}" >&2; exit 1; }

shopt -s nullglob
for m in "$main"/results/cpu/runs/*/metrics.json; do
  run=$(basename "$(dirname "$m")")
  [ -f "$tree/results/cpu/runs/$run/metrics.json" ] && continue
  mkdir -p "$tree/results/cpu/runs/$run"
  # metrics.json last and each through a temporary name: Snakemake takes a run with a
  # metrics.json for finished, so a kill mid-copy must not leave a torn one.
  for f in config.yaml log.jsonl metrics.json; do
    cp "$(dirname "$m")/$f" "$tree/results/cpu/runs/$run/.$f.tmp"
    mv -f "$tree/results/cpu/runs/$run/.$f.tmp" "$tree/results/cpu/runs/$run/$f"
  done
done

# The started runs scripts/park_started_runs.sh parked in git, where this worktree has no
# checkpoint of its own (a fresh machine): their files, checkpoint.pt last, since a checkpoint
# marks a run as started.
parked=0
if git -C "$main" rev-parse -q --verify refs/heads/parked-runs >/dev/null; then
  for p in $(git -C "$main" ls-tree --name-only parked-runs results/cpu/runs/); do
    [ -f "$tree/$p/metrics.json" ] || [ -f "$tree/$p/checkpoint.pt" ] && continue
    mkdir -p "$tree/$p"
    for f in $(git -C "$main" ls-tree --name-only parked-runs "$p/" | grep -v '/checkpoint\.pt$') "$p/checkpoint.pt"; do
      git -C "$main" show "parked-runs:$f" > "$tree/$p/.${f##*/}.tmp"
      mv -f "$tree/$p/.${f##*/}.tmp" "$tree/$f"
    done
    parked=$((parked + 1))
  done
fi
[ $parked -eq 0 ] || echo "resume_reproduction: restored $parked parked run(s) from branch parked-runs"

cd "$tree"
export PYTHONPATH=$tree  # the launch commit's package, not this checkout's
targets=(table2_ptb_3layer table8_ablation table9_ptb_3layer_rnn fig5_ptb_3layer curves_ptb_3layer beyond_paper
         claims_3layer)
threads=${RUN_THREADS:-1}
case $threads in 1|2) ;; *) echo "resume_reproduction: RUN_THREADS is 1 or 2 (two cores), not '$threads'" >&2; exit 1;; esac
config=(--config profile=cpu "data_dir=$data" beyond_paper=true "threads=$threads")
out=$(snakemake --cores 2 --unlock "${targets[@]}" "${config[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
started=()
for d in results/cpu/runs/ptb-*/; do
  [ -f "${d}checkpoint.pt" ] && [ ! -f "${d}metrics.json" ] && started+=("${d}metrics.json")
done
echo "resume_reproduction: $(date -u '+%F %T') UTC, ${#started[@]} started run(s) first: ${started[*]:-none}"
# --prioritize takes every word up to the next option, so it comes after the targets.
exec crt-repro workflow -- --cores 2 --keep-going "${targets[@]}" ${started[@]:+--prioritize "${started[@]}"} \
  "${config[@]}"
