"""Word-level language-modelling corpora (PTB, WikiText-2, WikiText-103) as token-id tensors.

Tokenisation follows pytorch/examples ``word_language_model``: each line is split on whitespace
and gets one ``<eos>``; the token counts in ``../shared/data/README.md`` use the same rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")
SYNTHETIC = "synthetic"

# Bump when tokenisation or the cached layout changes, so stale caches are never served.
CACHE_VERSION = 1


@dataclass(frozen=True)
class DatasetSpec:
    folder: str
    files: dict[str, str]  # split -> file name inside `folder`


DATASETS: dict[str, DatasetSpec] = {
    "ptb": DatasetSpec("ptb", {s: f"ptb.{s}.txt" for s in SPLITS}),
    "wikitext-2": DatasetSpec("wikitext-2", {s: f"wiki.{s}.tokens" for s in SPLITS}),
    "wt103": DatasetSpec("wikitext-103", {s: f"wiki.{s}.tokens" for s in SPLITS}),
}
ALIASES = {"wikitext-103": "wt103"}


class DataNotFoundError(FileNotFoundError):
    """A corpus file is missing; the message says how to download it."""


@dataclass(frozen=True, eq=False)  # eq on tensors would return tensors, not bools
class Corpus:
    name: str
    vocab: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def canonical_dataset(name: str) -> str:
    """Map a dataset name or alias to its registry key (or "synthetic")."""
    name = ALIASES.get(name, name)
    if name in DATASETS or name == SYNTHETIC:
        return name
    valid = sorted([*DATASETS, *ALIASES, SYNTHETIC])
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(valid)}")


def default_data_dir() -> Path:
    return Path(os.environ.get("CRT_REPRO_DATA", "data"))


def default_cache_dir() -> Path:
    return Path(os.environ.get("CRT_REPRO_CACHE", Path.home() / ".cache" / "crt-repro"))


def dataset_paths(dataset: str, data_dir: str | Path) -> dict[str, Path]:
    """Absolute split -> file paths. `data_dir` is a root holding the dataset folder, or the
    dataset folder itself. Raises DataNotFoundError for the first missing file."""
    name = canonical_dataset(dataset)
    if name == SYNTHETIC:
        raise ValueError("the synthetic corpus is generated, it has no files")
    spec = DATASETS[name]
    root = Path(data_dir).expanduser().resolve()
    folder = root / spec.folder
    if not folder.is_dir() and any((root / f).is_file() for f in spec.files.values()):
        folder = root
    paths = {split: folder / fname for split, fname in spec.files.items()}
    # Downloads land in <to>/<spec.folder>; either --to below makes this data_dir load.
    to = folder.parent if folder.name == spec.folder else root
    for path in paths.values():
        if not path.is_file():
            raise DataNotFoundError(
                f"{path} not found; fetch it with: crt-repro download {name} --to {to}"
            )
    return paths


def read_lines(path: Path) -> Iterator[list[str]]:
    """Each line's words followed by one <eos>."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield line.split() + [EOS]


def _tokenize(paths: dict[str, Path]) -> tuple[list[str], dict[str, torch.Tensor]]:
    index = {EOS: 0}
    train: list[int] = []
    for words in read_lines(paths["train"]):
        for w in words:
            i = index.get(w)
            if i is None:
                i = index[w] = len(index)
            train.append(i)
    unk = index.get(UNK)
    splits = {"train": torch.tensor(train, dtype=torch.int64)}
    for split in ("valid", "test"):
        ids: list[int] = []
        for lineno, words in enumerate(read_lines(paths[split]), start=1):
            for w in words:
                i = index.get(w, unk)
                if i is None:
                    raise ValueError(
                        f"{paths[split]}:{lineno}: word {w!r} is not in the training "
                        f"vocabulary, which has no {UNK} to map it to"
                    )
                ids.append(i)
        splits[split] = torch.tensor(ids, dtype=torch.int64)
    return list(index), splits


def _cache_key(name: str, paths: dict[str, Path]) -> str:
    # Size + mtime instead of a content hash: hashing ~500 MB of WikiText-103 on every load
    # would cost more than the cache saves.
    files = []
    for split in SPLITS:
        st = paths[split].stat()
        files.append([split, str(paths[split]), st.st_size, st.st_mtime_ns])
    return json.dumps([CACHE_VERSION, name, files])


def _read_cache(path: Path, key: str) -> Corpus | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, weights_only=True)
        if obj["key"] != key:
            return None
        return Corpus(obj["name"], list(obj["vocab"]), obj["train"], obj["valid"], obj["test"])
    except Exception:  # a truncated or foreign file is just a cache miss; it gets rebuilt
        return None


def _write_cache(path: Path, key: str, corpus: Corpus) -> None:
    obj = {"key": key, "name": corpus.name, "vocab": corpus.vocab,
           **{s: getattr(corpus, s) for s in SPLITS}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same folder + os.replace: readers never see a half-written cache.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(obj, f)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        warnings.warn(f"could not write corpus cache {path}: {e}", stacklevel=3)


def load_corpus(
    dataset: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None
) -> Corpus:
    """Load a corpus as int64 id tensors; the vocabulary comes from train only (<eos> = 0,
    then first appearance). "synthetic" ignores data_dir and is generated, not cached."""
    name = canonical_dataset(dataset)
    if name == SYNTHETIC:
        from .synthetic import synthetic_corpus  # here, not on top: synthetic imports this module

        return synthetic_corpus()
    paths = dataset_paths(name, data_dir if data_dir is not None else default_data_dir())
    key = _cache_key(name, paths)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(cache_dir or default_cache_dir()).expanduser() / f"{name}-{digest}.pt"
    corpus = _read_cache(path, key)
    if corpus is None:
        vocab, splits = _tokenize(paths)
        corpus = Corpus(name, vocab, **splits)
        _write_cache(path, key, corpus)
    return corpus


def unigram_ppl(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int) -> float:
    """Perplexity on eval_ids of the add-one-smoothed unigram model fitted on train_ids."""
    for what, ids in (("train_ids", train_ids), ("eval_ids", eval_ids)):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(f"{what} has ids outside [0, {vocab_size})")
    if eval_ids.numel() == 0:
        raise ValueError("eval_ids is empty")
    counts = torch.bincount(train_ids.reshape(-1), minlength=vocab_size).double() + 1.0
    logp = counts.log() - math.log(counts.sum().item())
    return math.exp(-logp[eval_ids.reshape(-1)].mean().item())
