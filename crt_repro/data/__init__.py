"""Language-model data: corpora as token-id tensors, and segment streams over them.

`crt_repro.data.download` (fetching the corpora) is imported on its own, not re-exported here.
"""

from __future__ import annotations

from .corpus import (
    DATASETS,
    Corpus,
    CorpusMismatchError,
    DataNotFoundError,
    canonical_dataset,
    dataset_paths,
    fingerprint,
    load_corpus,
    unigram_ppl,
)
from .memory_reach import memory_reach_corpus
from .stream import SegmentStream, batchify
from .synthetic import synthetic_corpus

__all__ = [
    "DATASETS",
    "Corpus",
    "CorpusMismatchError",
    "DataNotFoundError",
    "SegmentStream",
    "batchify",
    "canonical_dataset",
    "corpus_for",
    "dataset_paths",
    "fingerprint",
    "load_corpus",
    "synthetic_corpus",
    "unigram_ppl",
]


def corpus_for(data) -> Corpus:
    """The corpus of a run's ``DataConfig``: a generated one from its settings, else from files."""
    if data.dataset == "memory-reach":
        return memory_reach_corpus(data.reach_gap, data.reach_keys)
    return load_corpus(data.dataset, data.data_dir)
