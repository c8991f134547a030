"""The memory-reach corpus: how far back can a model recall one token?

The text is a run of episodes::

    key, f_0, f_1, ..., f_(gap-2), ?, key, .  (0 to MAX_PAD - 1 pads)

``key`` is one of ``keys`` tokens, drawn uniformly and independently per episode; the fillers
cycle through ``N_FILLERS`` tokens (each determined by the one before) and ``?`` (the cue) ends the
gap. The target at the cue is the key seen ``gap`` tokens earlier: the recall position. Everything
else is predictable without memory except the episode's first key (chance, 1 / keys), how many
pads follow an episode and when the cue comes (counting). A model that counts but does not recall
loses ``ln keys`` nats per episode more than the ideal, which is small per token at long gaps,
while its recall accuracy stays at chance: hence the benchmark reports the accuracy at the recall
positions (``crt_repro.memory_reach``), not only perplexity.

The pads, uniform in number, keep episodes out of step with segments: with a fixed episode length
a multiple of the segment length (gap 32 at 17 tokens) each training stream would show its
episodes at one phase only, and a model could learn positions within a segment instead of the
task, and fail on streams of another phase. So at a gap below one segment some recalls fall
within a segment and some across a boundary, in every stream.
"""
from __future__ import annotations

import hashlib

import torch

from .vocab import Corpus

import math

N_FILLERS = 4
MAX_PAD = 4
CUE, PAD = "?", "."
# Bump when the generator changes: runs record it as their data fingerprint.
GENERATOR_VERSION = "memory-reach-v2"
TRAIN_TOKENS, EVAL_TOKENS = 2_000_000, 50_000


def vocab(keys: int) -> list[str]:
    return [f"key{i}" for i in range(keys)] + [f"fill{i}" for i in range(N_FILLERS)] + [CUE, PAD]


def cue_id(keys: int) -> int:
    return keys + N_FILLERS


def ideal_ppl(gap: int, keys: int) -> float:
    """Perplexity of a model that recalls every key and counts: per episode (mean length
    gap + 2 + mean pads) only the first key and the number of pads are unpredictable."""
    return math.exp((math.log(keys) + math.log(MAX_PAD)) / (gap + 2 + (MAX_PAD - 1) / 2))


def episodes(n_tokens: int, gap: int, keys: int, generator: torch.Generator) -> torch.Tensor:
    """At least ``n_tokens`` tokens of whole episodes (1-D int64)."""
    n = -(-n_tokens // (gap + 2))
    key = torch.randint(0, keys, (n,), generator=generator)
    pads = torch.randint(0, MAX_PAD, (n,), generator=generator)
    fill = keys + torch.arange(gap - 1) % N_FILLERS
    ep = torch.cat([key[:, None], fill.expand(n, -1), torch.full((n, 1), cue_id(keys)), key[:, None],
                    torch.full((n, MAX_PAD - 1), cue_id(keys) + 1)], dim=1)
    keep = torch.ones_like(ep, dtype=torch.bool)
    keep[:, gap + 2:] = torch.arange(MAX_PAD - 1) < pads[:, None]
    return ep[keep]


def memory_reach_corpus(gap: int, keys: int, seed: int = 0, train_tokens: int = TRAIN_TOKENS,
                        eval_tokens: int = EVAL_TOKENS) -> Corpus:
    """Deterministic in (gap, keys, seed); the splits are drawn from independent generators."""
    g = [torch.Generator().manual_seed(seed * 3 + i) for i in range(3)]
    return Corpus("memory-reach", vocab(keys), episodes(train_tokens, gap, keys, g[0]),
                  episodes(eval_tokens, gap, keys, g[1]), episodes(eval_tokens, gap, keys, g[2]))


def fingerprint() -> dict:
    return {"memory-reach": {"bytes": 0, "sha256": hashlib.sha256(GENERATOR_VERSION.encode()).hexdigest()}}
