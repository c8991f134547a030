"""The memory-reach corpus: how far back can a model recall one token?

The text is a run of episodes of ``gap + 2`` tokens::

    key, f_0, f_1, ..., f_(gap-2), ?, key

``key`` is one of ``keys`` tokens, drawn uniformly and independently per episode; the fillers
cycle through ``N_FILLERS`` tokens (each determined by the one before) and ``?`` (the cue) ends the
gap. The target at the cue is the key seen ``gap`` tokens earlier: the recall position. Everything
else is predictable without memory except the episode's first key (chance, 1 / keys) and when the
cue comes (counting). A model that counts but does not recall reaches a perplexity of about
``keys ** (2 / (gap + 2))``, close to the ideal ``keys ** (1 / (gap + 2))`` for long gaps, while
its recall accuracy stays at chance: hence the benchmark reports the accuracy at the recall
positions (``crt_repro.memory_reach``), not only perplexity.

Episodes do not align with segments, so at a gap below one segment some recalls fall within a
segment and some across a boundary.
"""
from __future__ import annotations

import hashlib

import torch

from .vocab import Corpus

N_FILLERS = 4
CUE = "?"
# Bump when the generator changes: runs record it as their data fingerprint.
GENERATOR_VERSION = "memory-reach-v1"
TRAIN_TOKENS, EVAL_TOKENS = 2_000_000, 50_000


def vocab(keys: int) -> list[str]:
    return [f"key{i}" for i in range(keys)] + [f"fill{i}" for i in range(N_FILLERS)] + [CUE]


def cue_id(keys: int) -> int:
    return keys + N_FILLERS


def episodes(n_tokens: int, gap: int, keys: int, generator: torch.Generator) -> torch.Tensor:
    """At least ``n_tokens`` tokens of whole episodes (1-D int64)."""
    n = -(-n_tokens // (gap + 2))
    key = torch.randint(0, keys, (n,), generator=generator)
    fill = keys + torch.arange(gap - 1) % N_FILLERS
    ep = torch.cat([key[:, None], fill.expand(n, -1), torch.full((n, 1), cue_id(keys)), key[:, None]], dim=1)
    return ep.reshape(-1)


def memory_reach_corpus(gap: int, keys: int, seed: int = 0, train_tokens: int = TRAIN_TOKENS,
                        eval_tokens: int = EVAL_TOKENS) -> Corpus:
    """Deterministic in (gap, keys, seed); the splits are drawn from independent generators."""
    g = [torch.Generator().manual_seed(seed * 3 + i) for i in range(3)]
    return Corpus("memory-reach", vocab(keys), episodes(train_tokens, gap, keys, g[0]),
                  episodes(eval_tokens, gap, keys, g[1]), episodes(eval_tokens, gap, keys, g[2]))


def fingerprint() -> dict:
    return {"memory-reach": {"bytes": 0, "sha256": hashlib.sha256(GENERATOR_VERSION.encode()).hexdigest()}}
