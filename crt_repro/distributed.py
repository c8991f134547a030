"""Data-parallel training in one job: one process per device, the B training streams split among them.

    torchrun --nproc_per_node N -m crt_repro train ...      (or: crt-repro train --nproc N ...)

Rank r trains the contiguous streams ``shard(B, world)`` of the B streams one process would
train, so its carried state (XL's memories, CRT's memory vector) is that of its own streams, and
the global batch and the tokens per step are one process's. DistributedDataParallel averages the
gradients; each rank's loss is weighted by its share of the streams, so that the average is the
gradient of the mean over all B streams also when N does not divide B.

Rank 0 alone writes the run directory, the log, the checkpoint and the metrics, and evaluates on
the whole split with the whole model, exactly as one process does (the others wait at their next
collective). The checkpoint holds the carried state of all B streams and the RNG states of every
rank (the CPU's, Python's and those of the one GPU the rank trains on), so a run resumes with any
number of ranks, rank r on its own GPU with rank r's states, and with the same number as if
uninterrupted.
"""
from __future__ import annotations

import datetime
import os
import random
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from crt_repro.config import Config, ConfigError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU (torchrun's LOCAL_RANK) where ``device`` is CUDA."""
        if self.parallel and device.type == "cuda":
            return torch.device("cuda", torch.cuda.current_device())
        return device

    def barrier(self) -> None:
        if self.parallel:
            dist.barrier()


def current() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def refuse_multi_node(env: dict[str, str]) -> None:
    """Training runs on one machine. Across machines is untested: torchrun --standalone meets on
    one, rank 0 alone writes the run directory every rank reads, and a rank's GPU is its
    LOCAL_RANK. So a Slurm job on several nodes, or a torchrun across several (WORLD_SIZE above
    LOCAL_WORLD_SIZE), stops here."""
    nodes = int(env.get("SLURM_NNODES", "1"))
    if nodes > 1:
        raise ValueError(f"SLURM_NNODES={nodes}: training across nodes is not supported (untested); "
                         "ask for one node (sbatch --nodes=1) and at most its GPUs (--nproc)")
    world, local = int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    if world > local:
        raise ValueError(f"WORLD_SIZE={world} with LOCAL_WORLD_SIZE={local}: torchrun across nodes is not supported "
                         "(untested); train on one machine (crt-repro train --nproc N)")


def check_gpu_count(nproc: int, device: torch.device) -> None:
    """One process per GPU: N processes on CUDA need N visible GPUs (a rank without one of its own
    would stop at torch.cuda.set_device, after torchrun has started the others)."""
    visible = torch.cuda.device_count() if device.type == "cuda" else nproc
    if visible < nproc:
        raise ValueError(f"--nproc {nproc}: {nproc} processes need {nproc} GPUs and {visible} are visible "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")


def warn_cpu_oversubscribed(nproc: int, device: torch.device) -> None:
    """gloo processes on the CPU beyond its cores share them: the run is slower, not wrong."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if device.type == "cpu" and nproc > cores:
        print(f"crt-repro train: warning: --nproc {nproc} starts {nproc} processes on {cores} CPU cores: they "
              f"share the cores (metrics.json records processes={nproc})", file=sys.stderr)


def init_from_env() -> World:
    """Join the process group torchrun's environment describes (WORLD_SIZE > 1); else a world of one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return current()
    # The other ranks wait at their next collective while rank 0 evaluates (a whole WikiText-103
    # split), longer than the default 10 minutes allow on a slow device.
    timeout = datetime.timedelta(hours=2)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        # NCCL for the gradients on the GPUs, gloo for what goes through the CPU (run.device=cpu).
        dist.init_process_group("cpu:gloo,cuda:nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return current()


def shard(cfg: Config, world: World) -> slice | None:
    """The training streams of this rank (None for one process: all of them)."""
    if not world.parallel:
        return None
    if cfg.is_video:
        raise ConfigError(f"data-parallel training ({world.size} processes) is for language-model runs; "
                          f"model.name={cfg.model.name!r} trains in one process")
    b = cfg.data.batch_size
    if world.size > b:
        raise ConfigError(f"data.batch_size={b}: {world.size} processes need at least one training stream each")
    return slice(b * world.rank // world.size, b * (world.rank + 1) // world.size)


class _StepLoss(nn.Module):
    """One optimiser step's loss on this rank's streams as a module for DDP to wrap: the whole
    step (several segments and the head's loss) is one forward, so DDP sees every parameter it
    used, and the ones it did not."""

    def __init__(self, model: nn.Module, task, weight: float):
        super().__init__()
        self.model = model
        self.task = task
        self.weight = weight

    def forward(self, step: int) -> tuple[Tensor, int]:
        loss, items = self.task.train_loss(self.model, step)
        return loss * self.weight, items


def step_loss(world: World, model: nn.Module, task, cfg: Config, device: torch.device):
    """``f(step) -> (loss to backpropagate, the step's mean loss over all B streams, items of all
    ranks)``. For one process the first two are the task's loss itself."""
    if not world.parallel:
        def one_process(step: int):
            loss, items = task.train_loss(model, step)
            return loss, loss, items
        return one_process

    streams = task.streams.stop - task.streams.start
    b = cfg.data.batch_size
    ddp = nn.parallel.DistributedDataParallel(
        _StepLoss(model, task, streams * world.size / b), device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,  # buffers are functions of the parameters, identical on every rank
        # CRT's memory RNN gets no gradient in a step of one segment: its output only crosses into
        # the next step, detached. Every other parameter is used in every step.
        find_unused_parameters=getattr(model, "mem_rnn", None) is not None)

    def data_parallel(step: int):
        loss, items = ddp(step)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        return loss, mean / world.size, items // streams * b
    return data_parallel


def seed_rank(cfg: Config, world: World, step: int) -> None:
    """A rank's own RNG streams (dropout) where the checkpoint holds none for it; rank 0 keeps the
    one-process stream."""
    if world.rank:
        seed = hash((cfg.run.seed, world.rank, step)) % 2**63
        torch.manual_seed(seed)
        random.seed(seed)


def gather_streams(state, world: World):
    """The carried state of all B streams, rank by rank along the batch dimension (on the CPU)."""
    if not world.parallel:
        return state
    parts = [None] * world.size
    dist.all_gather_object(parts, _to_cpu(state))
    if parts[0] is None:
        return None
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    return [torch.cat(layer) for layer in zip(*parts, strict=True)]


def agree_max(value: int, world: World) -> int:
    """The largest of the ranks' ``value``s, on every rank (through the CPU: no GPU sync)."""
    if not world.parallel:
        return value
    t = torch.tensor([value])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order."""
    if not world.parallel:
        return [obj]
    parts = [None] * world.size
    dist.all_gather_object(parts, obj)
    return parts


def _to_cpu(state):
    if state is None or isinstance(state, Tensor):
        return None if state is None else state.cpu()
    return [s.cpu() for s in state]
