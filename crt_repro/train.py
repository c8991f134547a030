"""Training: one run = one config -> checkpoints, a metrics log and ``metrics.json`` in a run
directory (its format: ``crt_repro.run_directory``; the checkpoint: ``crt_repro.checkpoint``).
Rerunning the same command resumes from the checkpoint and, on CPU, reaches bitwise the same final
metrics as an uninterrupted run.
Started by torchrun, a run trains data-parallel on all its processes (``crt_repro.distributed``).
"""
from __future__ import annotations

import datetime
import math
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from crt_repro import atomic, distributed
from crt_repro.checkpoint import load_checkpoint, load_model_state, read_checkpoint, save_checkpoint
from crt_repro.config import Config, ConfigError, load_config_file
from crt_repro.cost import recorded_cost
from crt_repro.model_specs import spec_of
from crt_repro.models import build_model
from crt_repro.run_directory import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    Logger,
    check_run_dir,
    check_same_data,
    read_log,
    read_record,
    require_checkpointed_run,
    write_run_config,
)
from crt_repro.tasks import data_fingerprint, make_task


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops and writes no metrics."""


class Stopped(RuntimeError):
    """A stop signal ended the run at a step boundary, after a checkpoint; the process exits with
    128 + the signal's number (non-zero: a workflow retries the job, and the retry resumes)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = 128 + signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@contextmanager
def stop_signals():
    """Within it, SIGTERM and SIGUSR1 do not kill the process: their numbers are appended to the
    list it yields, for the training loop to stop at the next step boundary. Only the main thread
    may set handlers; elsewhere the list stays empty and the signals keep their defaults."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    before = {s: signal.signal(s, lambda signum, frame: requested.append(signum)) for s in STOP_SIGNALS}
    try:
        yield requested
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


# Profiles at GPU scale: there `run.device: auto` means CUDA, never a silent fall back to the CPU
# (a paper-profile run would take months there). A rule here, not the profile's run.device:
# that key is part of the run id, and the paper runs keep theirs.
CUDA_PROFILES = ("paper",)


def cuda_unusable() -> str | None:
    """Why this process cannot train on CUDA, in a few words; None where it can."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None and torch.version.hip is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build "
                "(README, PyTorch per platform)")
    return (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} and cannot use a GPU here: none is "
            f"visible (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}) or the driver is "
            f"older than CUDA {torch.version.cuda} needs (see nvidia-smi)")


def device_name(device: torch.device) -> str:
    """What metrics.json and the timing tables record as the device: the GPU's name, or the CPU's cores."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


def resolve_device(name: str, profile: str = "") -> torch.device:
    """``run.device`` as a device; ``auto`` is CUDA where usable, else the CPU, but under a
    ``CUDA_PROFILES`` profile CUDA or an error saying why not."""
    if name == "auto" and profile not in CUDA_PROFILES:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    why = cuda_unusable() if name in ("auto", "cuda") else None
    if why and name == "auto":
        raise ConfigError(f"run.device=auto means CUDA under the {profile} profile, and {why}; "
                          "--device cpu trains on the CPU instead (another run id)")
    if why:
        raise ConfigError(f"run.device=cuda: {why}")
    return torch.device("cuda" if name == "auto" else name)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: CPUs without them emulate bf16 products, several times slower than
    fp32 (measured on a 2-core Xeon without them: 62 against 336 GFLOP/s at [2240,256]x[256,1024])."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def resolve_precision(cfg: Config, device: torch.device) -> str:
    """'bf16' or 'fp32': what ``run.bf16`` (true | false | auto) means on this device."""
    if cfg.run.bf16 != "auto":
        return "bf16" if cfg.run.bf16 else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class Optimizers:
    """The optimisers of one run, stepped together: the main one, and NCGRU's A optimiser when
    ``optim.ncgru_a_optimizer`` gives A one of its own (scoRNN/NC-GRU train A apart)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.all = optimizers
        for opt in optimizers:
            for g in opt.param_groups:
                g.setdefault("base_lr", g["lr"])

    def set_lr_factor(self, factor: float) -> None:
        for opt in self.all:
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor

    @property
    def lr(self) -> float:
        return self.all[0].param_groups[0]["lr"]

    def zero_grad(self) -> None:
        for opt in self.all:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.all:
            opt.step()

    def state_dict(self) -> list[dict]:
        return [opt.state_dict() for opt in self.all]

    def load_state_dict(self, states: list[dict]) -> None:
        for opt, state in zip(self.all, states, strict=True):
            opt.load_state_dict(state)


def make_optimizer(model: nn.Module, cfg: Config) -> Optimizers:
    """AdamW or SGD with momentum; weight decay on Linear weights only (not on norms, biases,
    embeddings or RNN parametrisations such as NCGRU's skew-symmetric A, which decay would bend
    towards identity)."""
    o = cfg.optim
    own_a = o.ncgru_a_optimizer != "shared"
    a_params = {id(m.A): m.A for m in model.modules() if hasattr(m, "A") and hasattr(m, "post_step")} if own_a else {}
    decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in a_params]
    groups = [
        {"params": [p for p in params if id(p) in decay], "weight_decay": o.weight_decay},
        {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
    ]
    if o.name == "sgd":
        main = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    else:
        main = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
    optimizers = [main]
    if a_params:
        cls = {"rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[o.ncgru_a_optimizer]
        optimizers.append(cls(list(a_params.values()), lr=o.ncgru_a_lr))
    return Optimizers(optimizers)


@dataclass(frozen=True)
class Schedule:
    """The run's length in steps (derived from its budget) and its learning-rate factor per step."""

    total: int
    warmup: int

    @classmethod
    def of(cls, cfg: Config, total: int) -> "Schedule":
        o = cfg.optim
        warmup = o.warmup_steps if o.warmup_steps else round(o.warmup_ratio * total)
        return cls(total, min(warmup, total))

    def lr_factor(self, step: int, cfg: Config) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio`` or a step decay at ``lr_steps``."""
        o = cfg.optim
        if step < self.warmup:
            return (step + 1) / self.warmup
        if o.schedule == "step":
            return o.step_gamma ** sum(step >= round(f * self.total) for f in o.lr_steps)
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def eval_steps(self, cfg: Config) -> set[int]:
        """Steps after which the validation split is evaluated (the end always is, separately)."""
        r = cfg.run
        if r.eval_every:
            return set(range(r.eval_every, self.total, r.eval_every))
        return {round(k * self.total / r.n_evals) for k in range(1, r.n_evals)} - {0, self.total}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def post_step(model: nn.Module, step: int) -> None:
    """Let modules keep their own invariants after each update (NCGRU refreshes its inverse)."""
    for m in model.modules():
        if m is not model and hasattr(m, "post_step"):
            m.post_step(step)


def optimizer_step(model: nn.Module, opt: Optimizers, loss: torch.Tensor, cfg: Config, step: int) -> None:
    """The update of training step ``step`` from its loss: backward, the gradient clip, the
    optimisers' step and the modules' invariants. ``crt-repro bench`` times this same update."""
    opt.zero_grad()
    loss.backward()
    if cfg.optim.clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip)
    opt.step()
    post_step(model, step)


def say(message: str) -> None:
    """One line of progress on stderr (the workflow's per-job logs keep it)."""
    print(message, file=sys.stderr, flush=True)


def train(cfg: Config, out: str | Path, on_step: Callable[[int], None] | None = None,
          progress: bool | None = None) -> dict:
    """Train ``cfg`` into run directory ``out`` (resuming if it holds a checkpoint) and evaluate.

    ``on_step(step)`` is called after every completed step (after its checkpoint, if any); tests
    use it to interrupt a run. ``progress=None`` shows a bar on a terminal and a log line every
    ``run.log_every`` steps elsewhere. Returns the metrics that were written to metrics.json.
    """
    out = Path(out)
    world = distributed.current()
    if world.is_main:
        check_run_dir(cfg, out)
    device = world.device(resolve_device(cfg.run.device, cfg.profile))
    if cfg.model.rnn_scan == "native" and device.type != "cpu":  # refused before the run directory is written
        raise ConfigError(f"model.rnn_scan=native is the CPU's loop in C, and this run is on {device.type} "
                          f"(run.device={cfg.run.device}): use auto, cudnn or graph")
    if (out / METRICS).exists():
        return finished_record(cfg, out, world)
    warn_paper_video_start(cfg)
    seed_everything(cfg.run.seed)
    task = make_task(cfg, device, distributed.shard(cfg, world))
    data = data_fingerprint(cfg)
    # Counted before the run directory is written: a model fvcore cannot count fails here, not
    # after its training.
    costs = recorded_cost(cfg, task.n_out, device) if world.is_main and not cfg.is_video else {}
    if world.is_main:
        write_run_config(cfg, out)  # only once the data loaded: a refused corpus leaves no run directory
    world.barrier()
    model = build_model(cfg, task.n_out).to(device)
    if cfg.run.compile:
        model.compile()  # in place: parameters, state_dict and attributes stay the module's
    opt = make_optimizer(model, cfg)
    schedule = Schedule.of(cfg, task.total_steps(cfg.optim))
    evals = schedule.eval_steps(cfg)
    step, precision = 0, resolve_precision(cfg, device)
    clock = {"train_s": 0.0, "wall_s": 0.0, "items": 0, "best_valid": None}
    if (out / CHECKPOINT).exists():
        ck = load_checkpoint(out, model, opt, task, data, device, world)
        # The precision a run started with is kept, so that one run is one precision throughout.
        step, clock, precision = ck["step"], ck["clock"], ck["precision"]
        if world.is_main:
            say(f"{cfg.run_id()}: resuming from step {step} of {schedule.total} ({CHECKPOINT})")
    else:
        distributed.seed_rank(cfg, world, 0)
        if world.is_main:
            on = f"{world.size} processes on {device.type}" if world.parallel else str(device)
            say(f"{cfg.run_id()}: {schedule.total} steps ({task.budget_text(cfg.optim)}), {precision}, on {on}")
    step_loss = distributed.step_loss(world, model, task, cfg, device)
    log = Logger(out, step, enabled=world.is_main)
    started = time.perf_counter()
    wall_at_start = clock["wall_s"]
    interactive = sys.stderr.isatty() if progress is None else progress
    unit = "clips" if cfg.is_video else "tokens"
    bar = tqdm(total=schedule.total, initial=step, desc=cfg.run_id(), unit="step", dynamic_ncols=True,
               disable=not interactive or not world.is_main)
    model.train()
    last_valid = None
    # Slurm sends SIGTERM at a job's time limit (SIGUSR1 where asked to, before it).
    with stop_signals() as requested:
        while step < schedule.total and not stopped_early(cfg, clock):
            t0 = time.perf_counter()
            opt.set_lr_factor(schedule.lr_factor(step, cfg))
            with autocast(precision, device):
                loss, shown, items = step_loss(step)  # shown: the mean over all ranks' streams
            if not torch.isfinite(shown):
                raise TrainingDiverged(f"loss is {shown.item()} at step {step + 1} of run {out}; no metrics written "
                                       "(lower optim.lr or raise optim.warmup_steps)")
            optimizer_step(model, opt, loss, cfg, step)
            step += 1
            dt = time.perf_counter() - t0
            clock["train_s"] += dt
            clock["items"] += items
            bar.update(1)
            if step % cfg.run.log_every == 0 or step == schedule.total:
                rate = clock["items"] / max(clock["train_s"], 1e-9)
                bar.set_postfix(loss=f"{shown.item():.3f}", tok_s=f"{rate:.0f}")
                log.write(step=step, loss=shown.item(), lr=opt.lr, items=clock["items"], items_per_s=rate)
                if not interactive and world.is_main:
                    eta = (schedule.total - step) * clock["train_s"] / max(step, 1)
                    say(f"step {step}/{schedule.total} loss {shown.item():.3f} {rate:.0f} {unit}/s "
                        f"eta {datetime.timedelta(seconds=round(eta))}")
            if step in evals:
                if world.is_main:
                    last_valid = (step, validate(cfg, out, task, model, log, clock, step, precision, device))
                # Every rank stops where rank 0, which alone validates, says so.
                clock["evals_since_best"] = distributed.gather(clock.get("evals_since_best", 0), world)[0]
            signum = distributed.agree_max(requested[0] if requested else 0, world)  # the ranks stop together
            if step % cfg.run.checkpoint_every == 0 or step == schedule.total or step in evals or signum:
                clock["wall_s"] = wall_at_start + time.perf_counter() - started
                save_checkpoint(out, step, model, opt, task, clock, precision, data, device, world)
            if on_step is not None:
                on_step(step)
            if signum:
                raise Stopped(signum, f"stopped by {signal.Signals(signum).name} after step {step} of "
                                      f"{schedule.total}; {out / CHECKPOINT} written: rerun the same command to resume")
    bar.close()
    if not world.is_main:
        return {}
    if stopped_early(cfg, clock):
        say(f"{cfg.run_id()}: stopped early at step {step} of {schedule.total}: no better validation in "
            f"{cfg.run.early_stop_patience} validations (best at step {clock['best_valid']['step']})")

    results, reported = evaluate_reported(cfg, out, task, model, log, clock, step, last_valid, precision, device)
    metrics = run_metrics(cfg, model, results, clock, wall_at_start + time.perf_counter() - started, device)
    if world.parallel:
        metrics["device"] = f"{world.size} x {metrics['device']}"
    metrics["processes"] = world.size
    metrics.update(steps=step, planned_steps=schedule.total, stopped_early=stopped_early(cfg, clock),
                   reported_step=reported, precision=precision, data_files=data,
                   train_epochs=clock["items"] / task.epoch_items,
                   valid_gain_last_epoch=valid_gain_last_epoch(read_log(out, step), task.epoch_items), **costs,
                   **({} if cfg.is_video else {"streams": cfg.data.batch_size, "tokens_per_step":
                                                   cfg.data.batch_size * cfg.data.seg_len * cfg.optim.bptt_segments}))
    atomic.write_json(out / METRICS, metrics)
    (out / BEST).unlink(missing_ok=True)
    say(f"{cfg.run_id()}: finished: valid ppl/loss {_headline(results['valid'])}, test {_headline(results['test'])}")
    return metrics


def finished_record(cfg: Config, out: Path, world: distributed.World) -> dict:
    """The metrics.json of a run that has finished, unless it was trained on other data than
    ``cfg``'s files hold now."""
    metrics = read_record((out / METRICS).read_text(), str(out / METRICS), out)
    try:
        current = data_fingerprint(cfg)
    except FileNotFoundError:  # a finished run's record stands without its data at hand
        current = None
    if current is not None:
        check_same_data(out, metrics.get("data_files"), current, METRICS)
    if world.is_main:
        say(f"{cfg.run_id()}: already finished: {out / METRICS} present")
    return metrics


def validate(cfg: Config, out: Path, task, model: nn.Module, log: Logger, clock: dict, step: int, precision: str,
             device: torch.device) -> dict:
    """Evaluate the validation split during training, log it, and keep in ``clock`` the best so
    far and the validations since (early stopping), with its weights where the run reports the best."""
    r = evaluate_model(task, model, precision, device, "valid")
    log.write(step=step, split="valid", items=clock["items"], **r)
    if clock["best_valid"] is None or r["loss"] < clock["best_valid"]["loss"]:
        if cfg.run.report == "best_valid":
            atomic.torch_save(out / BEST, model.state_dict())
        clock["best_valid"] = {"step": step, "loss": r["loss"]}
        clock["evals_since_best"] = 0
    else:
        clock["evals_since_best"] = clock.get("evals_since_best", 0) + 1
    return r


def evaluate_reported(cfg: Config, out: Path, task, model: nn.Module, log: Logger, clock: dict, step: int,
                      last_valid: tuple[int, dict] | None, precision: str, device: torch.device) -> tuple[dict, int]:
    """Valid and test results of the model the run reports, and the step it is of: the last
    step's, or under ``run.report: best_valid`` the best validation's weights where they beat it."""
    if last_valid is not None and last_valid[0] == step:  # stopped right after a validation
        final_valid = last_valid[1]
    else:
        final_valid = evaluate_model(task, model, precision, device, "valid")
        log.write(step=step, split="valid", items=clock["items"], **final_valid)
    reported = step
    best = clock["best_valid"]
    if cfg.run.report == "best_valid" and best is not None and best["loss"] < final_valid["loss"]:
        model.load_state_dict(torch.load(out / BEST, map_location=device, weights_only=True))
        reported = best["step"]
        say(f"reporting the best validation checkpoint, step {reported}")
    results = {"valid": evaluate_model(task, model, precision, device, "valid") if reported != step else final_valid,
               "test": evaluate_model(task, model, precision, device, "test")}
    log.write(step=step, split="test", items=clock["items"], reported_step=reported, **results["test"])
    return results, reported


def stopped_early(cfg: Config, clock: dict) -> bool:
    patience = cfg.run.early_stop_patience
    return patience is not None and clock.get("evals_since_best", 0) >= patience


def valid_gain_last_epoch(log: list[dict], epoch_items: int) -> float | None:
    """Relative fall of validation perplexity over the run's last epoch of training: (ppl one
    epoch before the end - ppl at the end) / ppl one epoch before; None for a run of under an
    epoch or without validations during it. A run still improving by more than 1% here had not
    reached its plateau."""
    valid = [e for e in log if e.get("split") == "valid" and "ppl" in e]
    if not valid:
        return None
    end = valid[-1]
    before = [e for e in valid if e["items"] <= end["items"] - epoch_items]
    if not before:
        return None
    return (before[-1]["ppl"] - end["ppl"]) / before[-1]["ppl"]


def _headline(r: dict) -> str:
    return f"{r['ppl']:.2f}" if "ppl" in r else f"loss {r['loss']:.4f}"


def warn_paper_video_start(cfg: Config) -> None:
    if cfg.profile == "paper" and spec_of(cfg.model.name).k400_start and not cfg.model.init_from:
        say("WARNING: a paper-profile TimeSformer run without a Kinetics-400 checkpoint trains from scratch; the "
            "paper starts from K400 weights (workflow: --config k400_checkpoint=TimeSformer_divST_8x32_224_K400.pyth)")


def evaluate_model(task, model: nn.Module, precision: str, device: torch.device, split: str) -> dict:
    was_training = model.training
    model.eval()
    with autocast(precision, device):
        r = task.evaluate(model, split)
    model.train(was_training)
    return r


def run_metrics(cfg: Config, model: nn.Module, results: dict, clock: dict, wall_s: float,
                device: torch.device) -> dict:
    m = cfg.model
    metrics = {
        "run_id": cfg.run_id(),
        "profile": cfg.profile,
        "dataset": cfg.data.dataset,
        "model": m.name,
        "rnn": cfg.spec.cell(m),
        "layers": m.n_layer,
        "d_model": m.d_model,
        "seg_len": cfg.seg_len,
        "mem_len": cfg.mem_len,
        "seed": cfg.run.seed,
        "params": count_params(model),
        "train_items": clock["items"],
        "train_tokens_per_s": clock["items"] / max(clock["train_s"], 1e-9),
        "wall_s": wall_s,
        "peak_mem_mb": peak_mem_mb(device),
        "git_sha": git_sha(),
        "torch_version": torch.__version__,
        "device": device_name(device),
        "device_type": device.type,
        "visible_gpus": torch.cuda.device_count(),  # per process: CUDA_VISIBLE_DEVICES narrows it
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for split, r in results.items():
        for k, v in r.items():
            metrics[f"{split}_{k}"] = v
    return metrics


def evaluate_run(run_dir: str | Path) -> dict:
    """Re-evaluate the last checkpoint of a run directory on valid and test."""
    run_dir = Path(run_dir)
    require_checkpointed_run(run_dir)
    cfg = load_config_file(run_dir / CONFIG)
    device = resolve_device(cfg.run.device)
    task = make_task(cfg, device)
    model = build_model(cfg, task.n_out).to(device)
    ck = read_checkpoint(run_dir / CHECKPOINT, device)
    load_model_state(model, ck["model"], run_dir / CHECKPOINT)
    out = {"run_id": cfg.run_id(), "step": ck["step"]}
    for split in ("valid", "test"):
        for k, v in evaluate_model(task, model, ck["precision"], device, split).items():
            out[f"{split}_{k}"] = v
    return out

