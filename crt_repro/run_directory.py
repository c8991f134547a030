"""The run directory's format: what ``crt-repro train`` writes into ``--out`` and what reads it.

``config.yaml`` (the resolved config), ``log.jsonl`` (one JSON line per logged step and
evaluation), ``checkpoint.pt`` (``crt_repro.checkpoint``), ``best.pt`` (the weights of the best
validation while a ``run.report: best_valid`` run trains), and, only once the run finished cleanly,
``metrics.json`` (its record: results, cost, machine, data; ``crt_repro.results`` reads it). A run
trained before runs recorded their forward cost has it in ``cost.json`` (``crt-repro record-costs``).
"""
from __future__ import annotations

import json
from pathlib import Path

from crt_repro import atomic
from crt_repro.config import Config, ConfigError, dump_yaml, load_config_file

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
LOG = "log.jsonl"
CONFIG = "config.yaml"
BEST = "best.pt"  # model weights of the best validation so far (run.report: best_valid); removed at the end
COST = "cost.json"


class RunDirError(ValueError):
    """A run directory that cannot be used: not a directory, not writable, someone else's files,
    or an unreadable checkpoint; the message names it."""


def check_run_dir(cfg: Config, out: Path) -> None:
    """Refuse a path that is not a directory, a directory whose config.yaml holds another run,
    and a non-empty directory that is not a run directory (run files must not land among
    unrelated ones)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is not a directory; choose another --out")
    path = out / CONFIG
    if path.exists():
        try:
            old = load_config_file(path)
        except ConfigError as e:
            raise RunDirError(f"{e} (delete {out} to start the run over, or choose another --out)") from None
        if old.relevant_dict() != cfg.relevant_dict():
            raise ConfigError(
                f"{out} holds a different run (run id {old.run_id()}, this config is {cfg.run_id()}); "
                "choose another --out or delete that directory")
    elif out.is_dir() and any(out.iterdir()):
        raise RunDirError(f"--out {out} is a non-empty directory without {CONFIG}, so not a run directory; "
                          "choose a new or empty directory")


def fixed_by_name(cfg: Config) -> str:
    """A YAML comment naming what the model's name sets over the keys below it (Table 8's
    ablations, XL's memory, the absolute-position Transformer), or '' where it sets nothing: the
    file keeps the keys as configured, which the run id hashes."""
    configured, built = cfg.model, cfg.resolved_model()
    changed = [f"model.{k}={getattr(built, k)}" for k in vars(configured) if getattr(built, k) != getattr(configured, k)]
    return f"# model.name={configured.name} sets {', '.join(changed)} in the model it builds\n" if changed else ""


def write_run_config(cfg: Config, out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / CONFIG, fixed_by_name(cfg) + dump_yaml(cfg))
    except OSError as e:
        raise RunDirError(f"cannot write the run directory {out}: {e.strerror or e} "
                          f"({e.filename or out})") from None


def read_log(out: Path, up_to_step: int) -> list[dict]:
    path = out / LOG
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.splitlines()
    # A kill in the middle of an append leaves a last line without its newline. It lies past the
    # checkpoint (a step's lines are written before its checkpoint), so, torn, it goes like the
    # others past it; a bad line anywhere else is an error.
    if lines and not text.endswith("\n") and not _is_json(lines[-1]):
        lines.pop()
    entries = (read_record(line, f"{path}:{lineno}", out) for lineno, line in enumerate(lines, start=1))
    return [e for e in entries if e["step"] <= up_to_step]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def read_record(text: str, where: str, out: Path):
    """JSON of a run record (metrics.json, a log.jsonl line); what is not is one line naming it."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunDirError(f"{where}: not valid JSON ({e}); delete {out} to start the run over") from None


class Logger:
    """Appends to log.jsonl; on resume, entries past the checkpoint are dropped first."""

    def __init__(self, out: Path, resume_step: int, enabled: bool = True):
        self.path = out / LOG
        self.enabled = enabled  # in data-parallel training, rank 0 alone writes
        if enabled:
            atomic.write_text(self.path, "".join(json.dumps(e) + "\n" for e in read_log(out, resume_step)))

    def write(self, **entry) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def check_same_data(out: Path, recorded: dict | None, current: dict, where: str) -> None:
    """A run resumed or reported on other data than it was trained on is refused, naming the files."""
    if recorded is None or recorded == current:
        return
    changed = sorted(f for f in set(recorded) | set(current) if recorded.get(f) != current.get(f))
    detail = "; ".join(f"{f}: {_describe(recorded.get(f))} then, {_describe(current.get(f))} now" for f in changed)
    raise ConfigError(f"{out} was trained on other data than data.data_dir holds now ({where}): {detail}. "
                      "Point --data-dir at the data the run used, or train into another --out")


def _describe(entry: dict | None) -> str:
    return "absent" if entry is None else f"{entry['bytes']} bytes, sha256 {entry['sha256'][:12]}"


def require_checkpointed_run(run_dir: Path) -> None:
    """A run directory with its config and checkpoint, or an error naming the file missing."""
    for name in (CONFIG, CHECKPOINT):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} does not exist: is {run_dir} a run directory of `crt-repro train`?")
