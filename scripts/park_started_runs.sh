#!/usr/bin/env bash
# Before a session ends on a machine that may not be kept: stop the long reproduction training in
# LAUNCH_CHECKOUT at a step boundary and park its started runs in git, for
# scripts/resume_reproduction.sh to restore on a fresh machine instead of training them again.
#   bash scripts/park_started_runs.sh LAUNCH_CHECKOUT [SCALE]     e.g. /work/repro cpu
# - stops the workflow there (crt-repro workflow, Snakemake), so that no new run starts, then its
#   training processes with SIGTERM, on which each writes its checkpoint and exits;
# - commits every file of each started run (a checkpoint, no metrics.json) to the branch
#   parked-runs as one commit with no parent that replaces the last, so that git holds only the
#   latest checkpoints (some 35 MB a run); with no started run the branch is deleted.
# Only processes whose working directory is LAUNCH_CHECKOUT are stopped: a test's or another
# checkout's training is left alone.
set -euo pipefail
shopt -s nullglob
tree=$(cd "${1:?the checkout the runs train in, e.g. /work/repro}" && pwd -P)
scale=${2:-cpu}
cd "$(dirname "$0")/.."

in_tree() {  # the pids of processes matching $1 that run in the launch checkout
  local pid
  for pid in $(pgrep -f "$1" || true); do
    [ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" = "$tree" ] && echo "$pid"
  done
  return 0
}
# Outermost first: the pass loop, then Snakemake (so that neither starts another run), then the runs.
for pattern in "crt-repro workflow" "bin/snakemake" "crt-repro train"; do
  pids=$(in_tree "$pattern")
  [ -n "$pids" ] && kill -TERM $pids
done
for _ in $(seq 600); do   # a step and a checkpoint take seconds; give up after 10 minutes
  [ -z "$(in_tree 'crt-repro (workflow|train)|bin/snakemake')" ] && break
  sleep 1
done
left=$(in_tree 'crt-repro (workflow|train)|bin/snakemake')
[ -z "$left" ] || { echo "park_started_runs: still running after 10 minutes: pids $left; nothing parked" >&2; exit 1; }

index=$(mktemp -d)
trap 'rm -rf "$index"' EXIT
export GIT_INDEX_FILE=$index/index   # a private index: this checkout's staged work is untouched
git read-tree --empty
parked=()
for d in "$tree/results/$scale/runs"/*/; do
  [ -f "${d}checkpoint.pt" ] && [ ! -f "${d}metrics.json" ] || continue
  run=$(basename "$d")
  for f in "$d"*; do
    [ -f "$f" ] || continue
    git update-index --add --cacheinfo "100644,$(git hash-object -w -- "$f"),results/$scale/runs/$run/${f##*/}"
  done
  parked+=("$run")
done
if [ ${#parked[@]} -eq 0 ]; then
  git update-ref -d refs/heads/parked-runs 2>/dev/null || true
  echo "park_started_runs: no started run in $tree/results/$scale/runs; branch parked-runs removed"
  exit 0
fi
commit=$(git commit-tree "$(git write-tree)" -m "parked-runs: ${#parked[@]} started run(s) of $tree, $(date -u '+%F %T') UTC: ${parked[*]}")
git update-ref refs/heads/parked-runs "$commit"
echo "park_started_runs: parked ${#parked[@]} started run(s) on branch parked-runs (${commit:0:7}): ${parked[*]}"
