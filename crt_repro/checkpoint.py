"""A run's checkpoint: model, optimisers, task (data position, carried state), RNG streams, clock,
precision and data fingerprint at a step boundary, from which a rerun resumes bitwise (CPU)."""
from __future__ import annotations

import random
from pathlib import Path

import torch

from crt_repro import atomic, distributed
from crt_repro.run_directory import CHECKPOINT, RunDirError, check_same_data


def rng_state(device: torch.device) -> dict:
    """This process's RNG streams: the CPU's and Python's, and that of the one GPU it trains on
    (not every visible GPU's: a run resumed on fewer GPUs would have nowhere to put the rest)."""
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(rng: dict, device: torch.device, rank: int) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    cuda = rng["cuda"]
    if isinstance(cuda, list):  # an older checkpoint: every GPU rank ``rank`` saw, its own at index rank
        cuda = cuda[rank]
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def save_checkpoint(out: Path, step: int, model, opt, task, clock: dict, precision: str,
                    data: dict, device: torch.device, world: distributed.World = distributed.World()) -> None:
    """In data-parallel training every rank calls it (it gathers their states) and rank 0 writes."""
    task_state = task.state_dict()
    rngs = distributed.gather(rng_state(device), world)
    if not world.is_main:
        return
    ck = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "task": task_state,
        "rng": rngs[0],
        "clock": clock,
        "precision": precision,
        "data": data,
    }
    if world.parallel:
        ck["rng_ranks"] = rngs
    atomic.torch_save(out / CHECKPOINT, ck)


def read_checkpoint(path: Path, map_location) -> dict:
    """The checkpoint at ``path``; an empty or truncated file (a full disk, a copy cut short) is
    an error naming it, not a traceback from the unpickler."""
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises EOFError, RuntimeError or UnpicklingError, by how it is broken
        cause = " ".join(str(e).split()).split(". ")[0]  # the first sentence: miniz's advice runs on for four more
        raise RunDirError(f"{path} cannot be read as a checkpoint ({type(e).__name__}: {cause}); "
                          f"delete it to start the run over") from None


def load_model_state(model, state: dict, path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RunDirError(f"{path} holds a model of other shapes than this run builds "
                          f"({' '.join(str(e).split())[:300]}); was it trained on other data? "
                          "Delete it to start the run over, or train into another --out") from None


def load_checkpoint(out: Path, model, opt, task, data: dict, device: torch.device,
                    world: distributed.World = distributed.World()) -> dict:
    """Restore a run from its checkpoint; one trained on other data is refused before anything
    of it is loaded (another vocabulary would otherwise fail as a shape mismatch). A checkpoint
    of another number of ranks resumes too: rank r takes the RNG states rank r saved, on its
    own device, and a rank it holds none for seeds its own."""
    ck = read_checkpoint(out / CHECKPOINT, "cpu")
    check_same_data(out, ck["data"], data, CHECKPOINT)
    load_model_state(model, ck["model"], out / CHECKPOINT)
    opt.load_state_dict(ck["optimizer"])
    task.load_state_dict(ck["task"])
    rngs = ck.get("rng_ranks", [ck["rng"]])
    if world.rank >= len(rngs):
        distributed.seed_rank(task.cfg, world, ck["step"])
        return ck
    set_rng_state(rngs[world.rank], device, world.rank)
    return ck
