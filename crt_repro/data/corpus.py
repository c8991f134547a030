"""Word-level language-modelling corpora (PTB, WikiText-2, WikiText-103) as token-id tensors.

Tokenisation follows pytorch/examples ``word_language_model``: each line is split on whitespace
and gets one ``<eos>``; the token counts in ``../shared/data/README.md`` use the same rule. Ids
are numbered by training frequency (``vocab.frequency_sorted``), as in Transformer-XL.

A run records ``fingerprint`` of its files (size and sha256, cached by path, size and mtime), so
a resumed or merged run can be checked to be on the same data. A known corpus whose sha256
differs from the pinned one loads with a warning naming the file, and one that is clearly not the
corpus (a handful of word types, or a valid or test split with far more ``<unk>`` than train
has) is refused, as is a split without a word.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from crt_repro import atomic
from crt_repro.paths import default_cache_dir, default_data_dir

from .synthetic import synthetic_corpus
from .vocab import EOS, SPLITS, UNK, Corpus, frequency_sorted

SYNTHETIC = "synthetic"

# Bump when tokenisation or the cached layout changes, so stale caches are never served.
CACHE_VERSION = 2


@dataclass(frozen=True)
class DatasetSpec:
    folder: str
    files: dict[str, str]  # split -> file name inside `folder`
    # file name -> sha256 of the canonical file (../shared/data/README.md); None: not pinned
    sha256: dict[str, str | None]
    min_vocab: int  # fewer word types than this is not the corpus, whatever its hash


DATASETS: dict[str, DatasetSpec] = {
    "ptb": DatasetSpec("ptb", {s: f"ptb.{s}.txt" for s in SPLITS}, {
        "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    }, min_vocab=5_000),
    "wikitext-2": DatasetSpec("wikitext-2", {s: f"wiki.{s}.tokens" for s in SPLITS}, {
        "wiki.train.tokens": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
        "wiki.valid.tokens": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        "wiki.test.tokens": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
    }, min_vocab=10_000),
    # No verified copy was available to pin hashes against (see the data README).
    "wt103": DatasetSpec("wikitext-103", {s: f"wiki.{s}.tokens" for s in SPLITS},
                         {f"wiki.{s}.tokens": None for s in SPLITS}, min_vocab=100_000),
}
ALIASES = {"wikitext-103": "wt103"}
# Splits of one corpus have about train's share of <unk> (a word out of train's vocabulary
# becomes <unk>). The widest gap in the pinned files is WikiText-2's test, 6.2% against train's
# 2.6%; PTB's valid given as WikiText-2's has 13.5% (limit 8.9%), WikiText-2's given as PTB's 42%.
UNK_FACTOR, UNK_SLACK = 3.0, 0.01


class CorpusMismatchError(ValueError):
    """Files that cannot be the corpus they are named after; the message names the file."""


class DataNotFoundError(FileNotFoundError):
    """A corpus file is missing; the message says how to download it."""


def canonical_dataset(name: str) -> str:
    """Map a dataset name or alias to its registry key (or "synthetic")."""
    name = ALIASES.get(name, name)
    if name in DATASETS or name == SYNTHETIC:
        return name
    valid = sorted([*DATASETS, *ALIASES, SYNTHETIC])
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(valid)}")


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
                f"{path} not found; fetch it with: crt-repro download {name} --to {to} (then pass "
                f"--data-dir {to}, or set CRT_REPRO_DATA={to}), or train on the generated corpus with "
                f"--dataset {SYNTHETIC}, which needs no data"
            )
    return paths


class CorpusDecodeError(ValueError):
    """A corpus file that is not UTF-8; the message names the file and the first bad byte."""


def read_lines(path: Path) -> Iterator[list[str]]:
    """Each line's words followed by one <eos>."""
    with path.open(encoding="utf-8") as f:
        try:
            for line in f:
                yield line.split() + [EOS]
        except UnicodeDecodeError as e:
            raise CorpusDecodeError(f"{path}: not UTF-8 text at byte offset {_first_invalid_utf8(path)} "
                                    f"({e.reason}); the corpora are UTF-8 files") from None


def _first_invalid_utf8(path: Path) -> int:
    """Offset in the file of the first byte that is not valid UTF-8 (a text-mode read's error
    counts from the start of the chunk it was decoding)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                return offset - pending + e.start
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        return offset - len(e.object) + e.start
    return offset


class EmptySplitError(ValueError):
    """A corpus file without a word; the message names it."""


def _require_words(path: Path, split: str, tokens: int, lines: int) -> None:
    """Each line gives its words and one <eos>: a split with no more tokens than lines has no
    words. Refused when read: an empty valid or test split would only fail at its first
    evaluation, after training where no validation runs during it, in a message naming no file."""
    if tokens == lines:
        what = f"{lines} blank line{'s' if lines > 1 else ''}" if lines else "an empty file"
        raise EmptySplitError(f"{path}: the {split} split has no words ({what}): every split of a corpus needs text")


def _tokenize(paths: dict[str, Path]) -> tuple[list[str], dict[str, torch.Tensor]]:
    index = {EOS: 0}
    train: list[int] = []
    lineno = 0
    for lineno, words in enumerate(read_lines(paths["train"]), start=1):
        for w in words:
            i = index.get(w)
            if i is None:
                i = index[w] = len(index)
            train.append(i)
    _require_words(paths["train"], "train", len(train), lineno)
    unk = index.get(UNK)
    splits = {"train": torch.tensor(train, dtype=torch.int64)}
    for split in ("valid", "test"):
        ids: list[int] = []
        lineno = 0
        for lineno, words in enumerate(read_lines(paths[split]), start=1):
            for w in words:
                i = index.get(w, unk)
                if i is None:
                    raise ValueError(
                        f"{paths[split]}:{lineno}: word {w!r} is not in the training "
                        f"vocabulary, which has no {UNK} to map it to"
                    )
                ids.append(i)
        _require_words(paths[split], split, len(ids), lineno)
        splits[split] = torch.tensor(ids, dtype=torch.int64)
    return list(index), splits


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _file_digest(path: Path, cache_dir: Path) -> dict:
    """{"bytes", "sha256"} of one file; the hash is cached by path, size and mtime."""
    st = path.stat()
    key = json.dumps([str(path), st.st_size, st.st_mtime_ns])
    cache = cache_dir / "sha256" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return {"bytes": st.st_size, "sha256": cached["sha256"]}
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    try:
        atomic.write_json(cache, {"key": key, "sha256": digest})
    except OSError as e:
        warnings.warn(f"could not write the sha256 cache {cache}: {e}", stacklevel=3)
    return {"bytes": st.st_size, "sha256": digest}


def fingerprint(dataset: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> dict:
    """file name -> {"bytes", "sha256"} of a corpus's split files; the generated corpus gives
    its generator's version instead."""
    name = canonical_dataset(dataset)
    if name == SYNTHETIC:
        from .synthetic import GENERATOR_VERSION

        return {"synthetic": {"bytes": 0, "sha256": hashlib.sha256(GENERATOR_VERSION.encode()).hexdigest()}}
    paths = dataset_paths(name, data_dir if data_dir is not None else default_data_dir())
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    return {p.name: _file_digest(p, cache) for p in paths.values()}


def _share_of(ids: torch.Tensor, token: int) -> float:
    """The share of ``ids`` that are ``token`` (0 for no ids); counted, not averaged as floats,
    so that WikiText-103's train takes no float copy."""
    return torch.count_nonzero(ids == token).item() / ids.numel() if ids.numel() else 0.0


def _check_is_corpus(name: str, paths: dict[str, Path], corpus: Corpus, cache_dir: Path) -> None:
    spec = DATASETS[name]
    if corpus.vocab_size < spec.min_vocab:
        raise CorpusMismatchError(
            f"{paths['train']}: {corpus.vocab_size} word types, but {name} has at least {spec.min_vocab}: "
            f"this is not the {name} corpus (fetch it with: crt-repro download {name} --to DIR)")
    if UNK not in corpus.vocab:
        return  # then _tokenize has refused any word out of train's vocabulary
    unk = corpus.vocab.index(UNK)
    train_share = _share_of(corpus.train, unk)
    for split in ("valid", "test"):
        share = _share_of(getattr(corpus, split), unk)
        if share > UNK_FACTOR * train_share + UNK_SLACK:
            raise CorpusMismatchError(
                f"{paths[split]}: {share:.0%} of its words are {UNK} or not in {paths['train']}, against "
                f"{train_share:.1%} of train's: these are not splits of one {name} corpus")


def _warn_unpinned(name: str, paths: dict[str, Path], cache_dir: Path) -> None:
    spec = DATASETS[name]
    for path in paths.values():
        pinned = spec.sha256.get(path.name)
        if pinned is not None and _file_digest(path, cache_dir)["sha256"] != pinned:
            warnings.warn(f"{path}: sha256 differs from the pinned {name} file ({pinned[:12]}...): results "
                          "will not be comparable with runs on the canonical corpus", stacklevel=3)


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
        atomic.torch_save(path, obj)  # readers never see a half-written cache
    except OSError as e:
        warnings.warn(f"could not write corpus cache {path}: {e}", stacklevel=3)


def load_corpus(
    dataset: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
    *, check: bool = True,
) -> Corpus:
    """Load a corpus as int64 id tensors; the vocabulary comes from train only, numbered by
    frequency. "synthetic" ignores data_dir and is generated, not cached.

    ``check=False`` skips the checks that the files are the corpus they are named after (the
    ``CorpusMismatchError`` refusal and the warning for a sha256 other than the pinned one). It
    exists for tests of the tokenisation, which write a few hand-made lines under a known
    corpus's file names; the tokens, ids and cache are the same either way. Real data is always
    loaded with the checks (the CLI has no way to turn them off)."""
    name = canonical_dataset(dataset)
    if name == SYNTHETIC:
        return frequency_sorted(synthetic_corpus())
    paths = dataset_paths(name, data_dir if data_dir is not None else default_data_dir())
    key = _cache_key(name, paths)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache = Path(cache_dir or default_cache_dir()).expanduser()
    path = cache / f"{name}-{digest}.pt"
    corpus = _read_cache(path, key)
    if corpus is None:
        vocab, splits = _tokenize(paths)
        corpus = frequency_sorted(Corpus(name, vocab, **splits))
        if check:  # before the cache is written, so a refused corpus leaves no cache behind
            _check_is_corpus(name, paths, corpus, cache)
        _write_cache(path, key, corpus)
    elif check:
        # A cache written by a check=False load must not let the corpus through unchecked; the
        # check costs one pass over each split.
        _check_is_corpus(name, paths, corpus, cache)
    if check:
        _warn_unpinned(name, paths, cache)
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
