#!/usr/bin/env bash
# Commit the records of finished runs trained in another checkout (the launch worktree of a long
# reproduction, so that code changes on main never touch runs in flight): copies each finished
# run's config.yaml, log.jsonl and metrics.json into this checkout, gives a run its forward cost
# where its code did not record one (crt-repro record-costs), and commits them.
#   bash scripts/commit_finished_runs.sh LAUNCH_CHECKOUT [SCALE]     e.g. /work/repro cpu
# A run counts as new until git tracks its metrics.json, not until the file is here: a pass that
# copied a run and then failed (a kill, another git holding the index lock) leaves it for the next
# pass to commit, not skipped for good.
set -euo pipefail
shopt -s nullglob
src=${1:?the checkout the runs train in, e.g. /work/repro}/results/${2:-cpu}/runs
cd "$(dirname "$0")/.."
dst=results/${2:-cpu}/runs new=()
for m in "$src"/*/metrics.json; do
  d=$(basename "$(dirname "$m")")
  git ls-files --error-unmatch -- "$dst/$d/metrics.json" >/dev/null 2>&1 && continue
  mkdir -p "$dst/$d"
  # Through a temporary name, so that a kill mid-copy never leaves a torn record behind.
  for f in config.yaml log.jsonl metrics.json; do
    cp "$src/$d/$f" "$dst/$d/.$f.tmp" && mv -f "$dst/$d/.$f.tmp" "$dst/$d/$f"
  done
  new+=("$dst/$d")
done
[ ${#new[@]} -eq 0 ] && { echo "no new finished runs in $src"; exit 0; }
crt-repro record-costs "${new[@]}" >/dev/null
git add "${new[@]}"
# Only these paths: whatever else is staged in this checkout stays out of the commit.
git commit -qm "$dst: ${#new[@]} finished run(s): ${new[*]##*/}" -- "${new[@]}"
git log --oneline -1
