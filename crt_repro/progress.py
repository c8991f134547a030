"""``crt-repro progress -- SNAKEMAKE-ARGS ...``: how far the runs of some workflow targets are, and
about how long the rest will take.

The runs are the workflow's own (every run directory whose metrics.json is an output of the
targets, from ``snakemake --summary``: ``crt_repro.outputs``); their state is read from their
directories, never from a process list:

* done: ``metrics.json`` (epochs trained, whether it stopped early, best validation, test);
* running or stopped: ``log.jsonl`` (the epochs validated, the latest validation and tokens/s);
  running if the log was written in the last ``RUNNING_WITHIN`` seconds (a run logs every few
  dozen steps), stopped otherwise (killed: the workflow resumes it from its checkpoint);
* not started: no log yet.

Time left: each unfinished run's tokens left to its budget (``optim.max_epochs`` of the corpus's
training tokens, or ``optim.max_tokens``, or ``optim.max_steps`` of its tokens per step) over its
latest tokens/s. A run not started has no config yet: it is counted at the median budget and rate
of the runs that have one (a finished run's rate is its whole-run average, ``train_tokens_per_s``,
steadier than a running one's latest reading), which is right for a grid of equal budgets (as the
cpu scale's) and a guess otherwise. Runs that stop early on validation finish sooner, so the total
is an upper bound.
``--parallel N`` divides it by the runs the machine trains at once.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from crt_repro.corpora import TRAIN_TOKENS
from crt_repro.run_directory import CONFIG, LOG, METRICS, read_record


RUNNING_WITHIN = 900
STATES = ("done", "running", "stopped", "not started")


@dataclass
class RunProgress:
    run_id: str
    state: str  # one of STATES
    epochs: float | None = None
    max_epochs: float | None = None
    valid_ppl: float | None = None
    test_ppl: float | None = None
    stopped_early: bool | None = None
    tokens: int = 0
    budget_tokens: float | None = None  # at most, from the config
    tokens_per_s: float | None = None  # the latest logged; done: the whole run's average

    def seconds_left(self, budget: float, rate: float) -> float:
        return 0.0 if self.state == "done" else max(budget - self.tokens, 0) / rate


def budget_tokens(cfg: dict) -> float | None:
    """The tokens a run's config lets it train at most (None where it cannot be told)."""
    optim, data = cfg.get("optim") or {}, cfg.get("data") or {}
    if optim.get("max_tokens"):
        return float(optim["max_tokens"])
    if optim.get("max_epochs") and data.get("dataset") in TRAIN_TOKENS:
        return float(optim["max_epochs"]) * TRAIN_TOKENS[data["dataset"]]
    per_step = data.get("tokens_per_step") or (data.get("batch_size") or 0) * (data.get("seg_len") or 0)
    if optim.get("max_steps") and per_step:
        return float(optim["max_steps"]) * per_step * int(optim.get("bptt_segments") or 1)
    return None


def read_run(run_dir: Path, now: float | None = None) -> RunProgress:
    """The state of one run directory at time ``now`` (default: now; see the module docstring)."""
    from crt_repro.config import read_yaml_file

    progress = RunProgress(run_dir.name, "not started")
    if (run_dir / CONFIG).exists():
        cfg = read_yaml_file(run_dir / CONFIG) or {}
        progress.budget_tokens = budget_tokens(cfg)
        progress.max_epochs = (cfg.get("optim") or {}).get("max_epochs")
    if (run_dir / METRICS).exists():
        m = read_record((run_dir / METRICS).read_text(), str(run_dir / METRICS), run_dir)
        progress.state = "done"
        progress.epochs, progress.stopped_early = m.get("train_epochs"), m.get("stopped_early")
        progress.valid_ppl, progress.test_ppl = m.get("valid_ppl"), m.get("test_ppl")
        progress.tokens = int(m.get("train_items") or 0)
        progress.tokens_per_s = m.get("train_tokens_per_s")
        return progress
    if not (run_dir / LOG).exists():
        return progress
    log = run_dir / LOG
    recent = (time.time() if now is None else now) - log.stat().st_mtime < RUNNING_WITHIN
    progress.state = "running" if recent else "stopped"
    for lineno, line in enumerate(log.read_text().splitlines(), start=1):
        entry = read_record(line, f"{log}:{lineno}", run_dir)
        if entry.get("split") == "valid":
            progress.valid_ppl = entry.get("ppl")
            progress.epochs = (progress.epochs or 0) + 1
        elif "items_per_s" in entry:
            progress.tokens, progress.tokens_per_s = int(entry["items"]), float(entry["items_per_s"])
    return progress


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def report(runs: list[RunProgress], parallel: int = 1) -> str:
    """The table of runs and a closing line with the counts and the time left."""
    budgets = [r.budget_tokens for r in runs if r.budget_tokens]
    rates = [r.tokens_per_s for r in runs if r.tokens_per_s]
    typical_budget = statistics.median(budgets) if budgets else None
    typical_rate = statistics.median(rates) if rates else None
    w = max([len("run"), *(len(r.run_id) for r in runs)])
    head = f"{'run':<{w}} {'state':<11} {'epochs':>9} {'valid ppl':>9} {'test ppl':>8} {'tokens/s':>8} {'left':>7}"
    lines = [head, "-" * len(head)]
    left, guessed, unknown = 0.0, 0, 0
    for r in runs:
        budget, rate = r.budget_tokens or typical_budget, r.tokens_per_s or typical_rate
        seconds = r.seconds_left(budget, rate) if budget and rate else None
        if seconds is None:
            unknown += r.state != "done"
        else:
            left += seconds
            guessed += r.state == "not started"
        cap = f"/{r.max_epochs:g}" if r.max_epochs and r.state != "done" else ""
        epochs = f"{r.epochs or 0:g}{cap}" + (" (early)" if r.stopped_early else "")
        lines.append(f"{r.run_id:<{w}} {r.state:<11} {epochs:>9} {_fmt(r.valid_ppl, '.1f'):>9} "
                     f"{_fmt(r.test_ppl, '.1f'):>8} {_fmt(r.tokens_per_s, '.0f'):>8} "
                     f"{'' if seconds is None or r.state == 'done' else _hours(seconds):>7}")
    counts = ", ".join(f"{sum(r.state == s for r in runs)} {s}" for s in STATES)
    closing = (f"{len(runs)} runs: {counts}; at most {_hours(left)} of run time left "
               f"({_hours(left / parallel)} at {parallel} at once)")
    if guessed:
        closing += f"; the {guessed} not started counted at the median budget and tokens/s of the others"
    if unknown:
        closing += f"; {unknown} with no estimate (no run has a budget or a measured speed yet)"
    return "\n".join(lines + [closing])


def run_dirs(snakemake_args: list[str]) -> list[Path]:
    """The run directories whose metrics.json the targets' DAG holds, in its order."""
    from crt_repro.outputs import summary

    return list(dict.fromkeys(Path(o.path).parent for o in summary(snakemake_args) if Path(o.path).name == METRICS))


def cmd_progress(args: argparse.Namespace) -> int:
    given = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    if not given:
        raise ValueError("no snakemake arguments given: crt-repro progress -- TARGET ... --config profile=P")
    if args.parallel < 1:
        raise ValueError(f"--parallel must be >= 1, got {args.parallel}")
    dirs = run_dirs(given)
    if not dirs:
        print(f"crt-repro progress: the targets {' '.join(given)} train no runs", file=sys.stderr)
        return 0
    print(report([read_run(d) for d in dirs], args.parallel))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("progress", help="how far the runs of these snakemake targets are (done; running or stopped, "
                       "with their epoch and speed; not started) and at most how long the rest will take")
    p.add_argument("--parallel", type=int, default=1, help="runs trained at once, to turn run time into wall time "
                   "(default: %(default)s)")
    p.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="-- SNAKEMAKE-ARGS ...")
    p.set_defaults(func=cmd_progress)
