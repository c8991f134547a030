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
    "dataset_paths",
    "fingerprint",
    "load_corpus",
    "synthetic_corpus",
    "unigram_ppl",
]
