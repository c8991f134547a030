"""A small generated corpus for CI and the smoke profile, so neither needs a download.

Sentences follow part-of-speech templates, and each word has a few favoured successors in
the next word class. A model that learns this structure reaches a perplexity far below the
unigram one, which is what the smoke tests check.
"""

from __future__ import annotations

import random

import torch

from .vocab import EOS, Corpus

_CLASS_SIZES = {"det": 8, "adj": 50, "noun": 120, "verb": 80, "prep": 12, "adv": 20}
_TEMPLATES = (
    ("det", "noun", "verb", "det", "noun"),
    ("det", "adj", "noun", "verb", "det", "noun"),
    ("det", "noun", "verb", "prep", "det", "adj", "noun"),
    ("det", "adj", "noun", "adv", "verb"),
    ("det", "noun", "verb", "det", "noun", "prep", "det", "noun"),
)
_SUCCESSOR_WEIGHTS = (8, 4, 2, 1)  # a word's favoured successors, most likely first
# Bump when the generator changes: runs record it as their data fingerprint.
GENERATOR_VERSION = "synthetic-corpus-v1"


def synthetic_corpus(seed: int = 0, train_tokens: int = 30_000, eval_tokens: int = 5_000) -> Corpus:
    """Deterministic in `seed`; each split stops at the first sentence end past its target
    size. Vocab: <eos> = 0, then the words class by class (~290 words)."""
    rng = random.Random(seed)
    vocab = [EOS]
    ids_of: dict[str, list[int]] = {}
    for cls, n in _CLASS_SIZES.items():
        ids_of[cls] = list(range(len(vocab), len(vocab) + n))
        vocab += [f"{cls}{i}" for i in range(n)]
    successors = {
        (w, cls): rng.sample(ids_of[cls], len(_SUCCESSOR_WEIGHTS))
        for w in range(1, len(vocab))
        for cls in _CLASS_SIZES
    }
    # Zipf-like first-word choice, so the unigram distribution is skewed like real text.
    first_weights = {cls: [1.0 / (r + 1) for r in range(len(ids))] for cls, ids in ids_of.items()}

    def split(n_tokens: int) -> torch.Tensor:
        out: list[int] = []
        while len(out) < n_tokens:
            template = rng.choice(_TEMPLATES)
            word = rng.choices(ids_of[template[0]], first_weights[template[0]])[0]
            out.append(word)
            for cls in template[1:]:
                word = rng.choices(successors[word, cls], _SUCCESSOR_WEIGHTS)[0]
                out.append(word)
            out.append(0)
        return torch.tensor(out, dtype=torch.int64)

    return Corpus("synthetic", vocab, split(train_tokens), split(eval_tokens), split(eval_tokens))
