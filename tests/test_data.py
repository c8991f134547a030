from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
import shutil
import stat
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from crt_repro.data import corpus as corpus_mod
from crt_repro.data import download as dl
from crt_repro.data import (
    DATASETS,
    CorpusMismatchError,
    DataNotFoundError,
    SegmentStream,
    batchify,
    canonical_dataset,
    fingerprint,
    load_corpus,
    synthetic_corpus,
    unigram_ppl,
)

PTB_SHA = dl.SOURCES["ptb"].sha256


# ---------------------------------------------------------------- streams


def test_batchify_layout_and_trim() -> None:
    ids = torch.arange(103)
    data = batchify(ids, 4)
    assert data.shape == (4, 25) and data.dtype == ids.dtype and data.is_contiguous()
    for b in range(4):
        assert torch.equal(data[b], ids[b * 25 : (b + 1) * 25])


@pytest.mark.parametrize(("n", "bsz"), [(10, 0), (10, -1), (7, 4), (0, 1)])
def test_batchify_errors_name_numbers(n: int, bsz: int) -> None:
    with pytest.raises(ValueError, match=str(bsz)) as err:
        batchify(torch.arange(n), bsz)
    if bsz >= 1:
        assert str(n) in str(err.value)


@pytest.mark.parametrize("seg_len", [1, 3, 5, 7, 24, 25, 100])
def test_segments_cover_every_position_once(seg_len: int) -> None:
    data = batchify(torch.arange(3 * 25 + 2), 3)  # T = 25, values unique
    stream = SegmentStream(data, seg_len)
    assert len(stream) == math.ceil(24 / seg_len)
    segs = list(stream)
    assert [i for i, _, _ in segs] == list(range(len(stream)))
    xs = torch.cat([x for _, x, _ in segs], dim=1)
    ys = torch.cat([y for _, _, y in segs], dim=1)
    # Unique values + equality with the full slices: nothing dropped, nothing repeated.
    assert torch.equal(xs, data[:, :-1])
    assert torch.equal(ys, data[:, 1:])
    for (_, x, y), nxt in zip(segs, segs[1:] + [None]):
        assert x.shape == y.shape and x.is_contiguous() and y.is_contiguous()
        assert 1 <= x.shape[1] <= seg_len
        assert torch.equal(y[:, :-1], x[:, 1:])
        if nxt is not None:  # the last target of a segment is the next segment's first input
            assert torch.equal(y[:, -1], nxt[1][:, 0])


def test_iter_from_is_tail_of_full_iteration() -> None:
    stream = SegmentStream(batchify(torch.arange(200), 4), 7)
    full = list(stream)
    for k in range(len(stream) + 1):
        tail = list(stream.iter_from(k))
        assert len(tail) == len(full) - k
        for (i, x, y), (j, fx, fy) in zip(tail, full[k:]):
            assert i == j and torch.equal(x, fx) and torch.equal(y, fy)
    with pytest.raises(ValueError):
        stream.iter_from(len(stream) + 1)
    with pytest.raises(IndexError):
        stream.segment(len(stream))


def test_max_segments_caps_the_stream() -> None:
    data = batchify(torch.arange(200), 4)
    capped = SegmentStream(data, 7, max_segments=3)
    assert len(capped) == 3
    full = SegmentStream(data, 7)
    for (_, x, y), (_, fx, fy) in zip(capped, full):
        assert torch.equal(x, fx) and torch.equal(y, fy)
    assert len(SegmentStream(data, 7, max_segments=10_000)) == len(full)


# ---------------------------------------------------------------- corpora from files


def _write_ptb(root: Path, train: str, valid: str, test: str) -> Path:
    folder = root / "ptb"
    folder.mkdir(parents=True)
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{split}.txt").write_text(text, encoding="utf-8")
    return folder


def _decode(c, split: str) -> list[str]:
    return [c.vocab[i] for i in getattr(c, split).tolist()]


def _reference_vocab(lines: list[str]) -> tuple[list[str], list[int]]:
    """Transformer-style numbering computed independently of the library: descending count,
    ties in order of first appearance, <eos> first (the tokeniser numbers it before reading)."""
    counts = Counter({"<eos>": 0})  # a dict: keys keep insertion (first-appearance) order
    for line in lines:
        counts.update(line.split())
        counts["<eos>"] += 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])  # sorted() is stable
    return [w for w, _ in ranked], [n for _, n in ranked]


def test_canonical_dataset() -> None:
    assert canonical_dataset("wikitext-103") == "wt103"
    assert canonical_dataset("ptb") == "ptb"
    assert canonical_dataset("synthetic") == "synthetic"
    with pytest.raises(ValueError, match="'ptb2'.*wikitext-2"):
        canonical_dataset("ptb2")


def test_vocab_order_unk_and_eos(tmp_path: Path) -> None:
    _write_ptb(tmp_path / "d", " a b <unk> \n b c \n", " c zzz a \n", " a \n\n")
    c = load_corpus("ptb", tmp_path / "d", cache_dir=tmp_path / "cache", check=False)
    # train counts: <eos> 2, b 2, a 1, <unk> 1, c 1; <eos> wins its tie with b (it is numbered
    # before the first line is read), a / <unk> / c keep their order of first appearance.
    assert c.name == "ptb" and c.vocab == ["<eos>", "b", "a", "<unk>", "c"]
    assert c.train.dtype == torch.int64
    assert c.train.tolist() == [2, 1, 3, 0, 1, 4, 0]
    assert c.valid.tolist() == [4, 3, 2, 0]  # zzz is not in train -> <unk>
    assert c.test.tolist() == [2, 0, 0]  # an empty line still ends with <eos>


def test_frequency_order_on_a_hand_written_corpus(tmp_path: Path) -> None:
    train = " z c b c a c \n a c b \n b e <unk> \n"
    _write_ptb(tmp_path / "d", train, " a q c \n", " e z \n")
    c = load_corpus("ptb", tmp_path / "d", cache_dir=tmp_path / "cache", check=False)
    # counts: c 4; <eos> 3, b 3 (tie: <eos> first); a 2; z 1, e 1, <unk> 1 (first-appearance
    # order z, e, <unk>, which is neither alphabetical nor reversed).
    assert c.vocab == ["c", "<eos>", "b", "a", "z", "e", "<unk>"]
    assert c.vocab == _reference_vocab(train.splitlines())[0]
    assert c.vocab[0] == Counter(train.split()).most_common(1)[0][0]  # id 0: most frequent
    counts = torch.bincount(c.train, minlength=c.vocab_size).tolist()
    assert counts == [4, 3, 3, 2, 1, 1, 1]  # non-increasing along the ids
    assert c.train.tolist() == [4, 0, 2, 0, 3, 0, 1, 3, 0, 2, 1, 2, 5, 6, 1]
    # valid and test go through the same vocabulary; q is not in train -> <unk>'s id (6).
    assert c.valid.tolist() == [3, 6, 0, 1]
    assert c.test.tolist() == [5, 4, 1]
    assert _decode(c, "train") == [w for line in train.splitlines() for w in [*line.split(), "<eos>"]]


def test_unknown_word_without_unk_names_file_and_line(tmp_path: Path) -> None:
    folder = _write_ptb(tmp_path, " a b \n", " a \n", " a \n b zzz \n")
    with pytest.raises(ValueError, match=r"ptb\.test\.txt:2: .*'zzz'"):
        load_corpus("ptb", tmp_path, cache_dir=tmp_path / "cache", check=False)
    # The dataset folder itself is accepted as data_dir too.
    (folder / "ptb.test.txt").write_text(" b \n")
    # All of <eos>, a, b occur once: first-appearance order, b is 2.
    c = load_corpus("ptb", folder, cache_dir=tmp_path / "cache", check=False)
    assert c.vocab == ["<eos>", "a", "b"] and c.test.tolist() == [2, 0]


@pytest.mark.parametrize("split, text, what", [("valid", "", "an empty file"), ("test", "\n \n", "2 blank lines"),
                                               ("train", " \n", "1 blank line")])
@pytest.mark.parametrize("check", [True, False])
def test_a_split_without_words_is_refused_naming_the_file(tmp_path: Path, split: str, text: str, what: str,
                                                          check: bool) -> None:
    # Issue 26, item 6: an empty valid or test split failed only after training, naming no file.
    splits = {"train": " a b \n", "valid": " a \n", "test": " b \n", split: text}
    folder = _write_ptb(tmp_path / "d", splits["train"], splits["valid"], splits["test"])
    path = (folder / f"ptb.{split}.txt").resolve()
    with pytest.raises(corpus_mod.EmptySplitError) as err:
        load_corpus("ptb", tmp_path / "d", cache_dir=tmp_path / "cache", check=check)
    assert isinstance(err.value, ValueError)  # the CLI reports ValueErrors in one line
    assert str(err.value) == f"{path}: the {split} split has no words ({what}): every split of a corpus needs text"
    assert not list((tmp_path / "cache").glob("ptb-*.pt"))


def test_missing_file_says_how_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_corpus("ptb", tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(err.value, FileNotFoundError)
    msg = str(err.value)
    assert str(tmp_path / "ptb" / "ptb.train.txt") in msg
    assert f"crt-repro download ptb --to {tmp_path}" in msg

    folder = _write_ptb(tmp_path / "d", " a \n", " a \n", " a \n")
    (folder / "ptb.valid.txt").unlink()
    with pytest.raises(DataNotFoundError, match=r"ptb\.valid\.txt"):
        load_corpus("ptb", folder, cache_dir=tmp_path / "cache")


def test_second_load_is_served_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, cache = tmp_path / "d", tmp_path / "cache"
    _write_ptb(data, " a b \n c \n", " b \n", " c a \n")
    first = load_corpus("ptb", data, cache_dir=cache, check=False)
    # counts: <eos> 2, then a, b, c once each in first-appearance order
    assert first.vocab == ["<eos>", "a", "b", "c"] and first.test.tolist() == [3, 1, 0]
    files = list(cache.glob("ptb-*.pt"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def boom(path: Path) -> None:
        raise AssertionError(f"re-tokenised {path}")

    monkeypatch.setattr(corpus_mod, "read_lines", boom)
    second = load_corpus("ptb", data, cache_dir=cache, check=False)
    assert second.vocab == first.vocab
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(second, split), getattr(first, split))

    # A changed file changes the key, so the stale cache is not used.
    train = data / "ptb" / "ptb.train.txt"
    train.write_text(" a b d \n")
    os.utime(train, ns=(1, 1))
    with pytest.raises(AssertionError, match="re-tokenised"):
        load_corpus("ptb", data, cache_dir=cache, check=False)


def test_corrupted_cache_is_rebuilt(tmp_path: Path) -> None:
    data, cache = tmp_path / "d", tmp_path / "cache"
    _write_ptb(data, " a b \n", " b \n", " a \n")
    first = load_corpus("ptb", data, cache_dir=cache, check=False)
    (cache_file,) = cache.glob("ptb-*.pt")
    cache_file.write_bytes(b"\x00garbage")
    again = load_corpus("ptb", data, cache_dir=cache, check=False)
    assert again.vocab == first.vocab and torch.equal(again.train, first.train)
    assert torch.load(cache_file, weights_only=True)["vocab"] == first.vocab


# ---------------------------------------------------------------- fingerprints


def test_fingerprint_is_size_and_sha256_cached_by_mtime(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data, cache = tmp_path / "d", tmp_path / "cache"
    folder = _write_ptb(data, " a b \n c \n", " b \n", " c a \n")
    first = fingerprint("ptb", data, cache_dir=cache)
    assert sorted(first) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    for fname, entry in first.items():
        raw = (folder / fname).read_bytes()
        assert entry == {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}

    # Nothing touched: the second call is served from the cache without reading a file.
    def no_hashing(path: Path) -> str:
        raise AssertionError(f"re-hashed {path}")

    monkeypatch.setattr(corpus_mod, "sha256_file", no_hashing)
    assert fingerprint("ptb", data, cache_dir=cache) == first

    # Same size, other content, new mtime: that file (and only it) is hashed again.
    hashed: list[str] = []

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return corpus_mod.hashlib.sha256(path.read_bytes()).hexdigest()

    monkeypatch.setattr(corpus_mod, "sha256_file", counting)
    valid = folder / "ptb.valid.txt"
    valid.write_text(" x \n")
    os.utime(valid, ns=(10**18, 10**18))
    third = fingerprint("ptb", data, cache_dir=cache)
    assert hashed == ["ptb.valid.txt"]
    assert third["ptb.valid.txt"] == {"bytes": first["ptb.valid.txt"]["bytes"],
                                      "sha256": hashlib.sha256(b" x \n").hexdigest()}
    assert third["ptb.valid.txt"]["sha256"] != first["ptb.valid.txt"]["sha256"]
    assert {k: v for k, v in third.items() if k != "ptb.valid.txt"} == \
        {k: v for k, v in first.items() if k != "ptb.valid.txt"}


def test_fingerprint_of_shared_ptb_is_the_pinned_hashes(shared_data: Path, tmp_path: Path) -> None:
    fp = fingerprint("ptb", shared_data, cache_dir=tmp_path)
    assert {f: e["sha256"] for f, e in fp.items()} == DATASETS["ptb"].sha256
    assert fp["ptb.train.txt"]["bytes"] == 5_101_618  # ../shared/data/README.md


# ---------------------------------------------------------------- corpus checks


def _tiny_ptb(root: Path) -> Path:
    """A 1000-byte ptb.train.txt with 3 words: files named like PTB that are not PTB."""
    folder = _write_ptb(root, " a b c \n" * 125, " a b \n", " c \n")
    train = folder / "ptb.train.txt"
    assert train.stat().st_size == 1000
    return train.resolve()


def test_tiny_corpus_under_a_known_name_is_refused(tmp_path: Path) -> None:
    train, cache = _tiny_ptb(tmp_path / "d"), tmp_path / "cache"
    with pytest.raises(CorpusMismatchError, match=re.escape(str(train))) as err:
        load_corpus("ptb", tmp_path / "d", cache_dir=cache)
    assert isinstance(err.value, ValueError)  # the CLI reports ValueErrors in one line
    assert "4 word types" in str(err.value) and not list(cache.glob("ptb-*.pt"))
    # check=False loads it (and caches it); the cache must not let a checked load through.
    assert load_corpus("ptb", tmp_path / "d", cache_dir=cache, check=False).vocab_size == 4
    assert len(list(cache.glob("ptb-*.pt"))) == 1
    with pytest.raises(CorpusMismatchError, match=re.escape(str(train))):
        load_corpus("ptb", tmp_path / "d", cache_dir=cache)


def test_split_with_far_more_unk_than_train_is_refused(tmp_path: Path) -> None:
    # 6000 word types, and <unk> 10% of train's 7000 tokens (<eos> included): the limit is
    # 3 x 10% + 1% = 31% of a split.
    train = " " + " ".join(f"w{i}" for i in range(6000)) + " <unk>" * 700 + " \n" + " w1 \n" + " w1 w2 \n" * 99
    assert len(train.split()) + train.count("\n") == 7000 and train.count("<unk>") == 700
    folder = _write_ptb(tmp_path / "d", train, " q1 q2 w1 w2 \n", " w3 \n")
    valid = (folder / "ptb.valid.txt").resolve()
    cache = tmp_path / "cache"
    with pytest.raises(CorpusMismatchError, match=re.escape(str(valid))) as err:
        load_corpus("ptb", tmp_path / "d", cache_dir=cache)
    assert "40% of its words are <unk>" in str(err.value) and "10.0% of train's" in str(err.value)
    assert not list(cache.glob("ptb-*.pt"))
    # The test split is held to the same limit, and named.
    (folder / "ptb.valid.txt").write_text(" q1 w1 w2 w3 \n")  # 1 of 5: 20%
    (folder / "ptb.test.txt").write_text(" <unk> q1 w3 \n")  # 2 of 4: 50%
    with pytest.raises(CorpusMismatchError, match=re.escape(str((folder / "ptb.test.txt").resolve()))):
        load_corpus("ptb", tmp_path / "d", cache_dir=cache)
    # Under the limit, the same train loads.
    (folder / "ptb.test.txt").write_text(" q1 w3 w4 \n")  # 1 of 4: 25%
    with pytest.warns(UserWarning, match="sha256 differs"):  # not the pinned files, of course
        c = load_corpus("ptb", tmp_path / "d", cache_dir=cache)
    assert _decode(c, "valid") == ["<unk>", "w1", "w2", "w3", "<eos>"]


def test_wikitext2_splits_given_as_ptbs_are_refused(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d" / "ptb"
    folder.mkdir(parents=True)
    shutil.copyfile(shared_data / "ptb" / "ptb.train.txt", folder / "ptb.train.txt")
    shutil.copyfile(shared_data / "ptb" / "ptb.valid.txt", folder / "ptb.valid.txt")
    shutil.copyfile(shared_data / "wikitext-2" / "wiki.test.tokens", folder / "ptb.test.txt")
    with pytest.raises(CorpusMismatchError, match=re.escape(str((folder / "ptb.test.txt").resolve()))) as err:
        load_corpus("ptb", tmp_path / "d", cache_dir=tmp_path / "cache")
    assert "42% of its words" in str(err.value)


def test_changed_ptb_copy_loads_with_a_warning_naming_the_file(shared_data: Path,
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "d" / "ptb"
    folder.mkdir(parents=True)
    for fname in DATASETS["ptb"].files.values():
        shutil.copyfile(shared_data / "ptb" / fname, folder / fname)
    train = (folder / "ptb.train.txt").resolve()
    text = train.read_text()
    assert text.startswith(" aer banknote ")
    train.write_text(text.replace(" aer ", " air ", 1))
    with pytest.warns(UserWarning, match=re.escape(str(train))) as record:
        c = load_corpus("ptb", tmp_path / "d", cache_dir=tmp_path / "cache")
    named = [str(w.message) for w in record if "sha256" in str(w.message)]
    assert len(named) == 1 and named[0].startswith(str(train))  # valid and test are pristine
    assert _decode(c, "train")[:2] == ["air", "banknote"]


def test_canonical_ptb_loads_without_a_warning(ptb, shared_data: Path, ptb_cache: Path) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        c = load_corpus("ptb", shared_data, cache_dir=ptb_cache)
        fresh = load_corpus("ptb", shared_data, cache_dir=ptb_cache / "fresh")  # hashes anew
    assert [str(w.message) for w in record if issubclass(w.category, UserWarning)] == []
    assert c.vocab == ptb.vocab == fresh.vocab


def test_cli_refuses_a_tiny_corpus_in_one_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from crt_repro import cli

    train = _tiny_ptb(tmp_path / "d" / "x")
    # warmup_steps=0: the smoke profile's 10 warmup steps would be refused with max_steps=1.
    rc = cli.main(["train", "--profile", "smoke", "--dataset", "ptb", "--model", "transformer",
                   "--layers", "1", "--seg-len", "8", "--data-dir", str(tmp_path / "d" / "x"),
                   "--set", "optim.max_steps=1", "--set", "optim.warmup_steps=0",
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("crt-repro train: error: ") and err.count("\n") == 1, err
    assert str(train) in err and "Traceback" not in err


# ---------------------------------------------------------------- real corpora


@pytest.fixture(scope="session")
def ptb_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def ptb(shared_data: Path, ptb_cache: Path):
    return load_corpus("ptb", shared_data, cache_dir=ptb_cache)


# (split, tokens with eos, lines, <unk>) from ../shared/data/README.md
PTB_COUNTS = [("train", 929_589, 42_068, 45_020), ("valid", 73_760, 3_370, 3_485),
              ("test", 82_430, 3_761, 4_794)]
WT2_COUNTS = [("train", 2_088_628, 36_718, 54_625), ("valid", 217_646, 3_760, 11_718),
              ("test", 245_569, 4_358, 15_218)]


def _check_counts(c, vocab_size: int, counts: list[tuple[str, int, int, int]]) -> None:
    assert c.vocab_size == vocab_size
    eos, unk = c.vocab.index("<eos>"), c.vocab.index("<unk>")
    for split, tokens, lines, unks in counts:
        ids = getattr(c, split)
        assert ids.dtype == torch.int64 and ids.dim() == 1
        assert ids.numel() == tokens, split
        assert int((ids == eos).sum()) == lines, split
        assert int((ids == unk).sum()) == unks, split
    train_counts = torch.bincount(c.train, minlength=c.vocab_size)
    assert bool((train_counts[:-1] >= train_counts[1:]).all())  # frequency-sorted
    assert int(train_counts.min()) >= 1  # every word of the vocabulary occurs in train


def test_ptb_matches_readme(ptb) -> None:
    _check_counts(ptb, 10_000, PTB_COUNTS)
    assert ptb.vocab[:8] == ["the", "<unk>", "<eos>", "N", "of", "to", "a", "in"]
    assert torch.bincount(ptb.train)[:4].tolist() == [50_770, 45_020, 42_068, 32_481]


def test_ptb_is_frequency_sorted(ptb, shared_data: Path) -> None:
    lines = {s: (shared_data / "ptb" / f"ptb.{s}.txt").read_text().splitlines()
             for s in ("train", "valid", "test")}
    vocab, counts = _reference_vocab(lines["train"])
    most_common = Counter(w for ln in lines["train"] for w in ln.split()).most_common(1)[0][0]
    assert ptb.vocab[0] == "the" == most_common
    assert ptb.vocab == vocab  # the whole order, ties included
    assert torch.bincount(ptb.train, minlength=ptb.vocab_size).tolist() == counts
    assert all(a >= b for a, b in zip(counts, counts[1:]))
    # Every split decodes back to its file's words (PTB valid/test have no word missing from train).
    for split, split_lines in lines.items():
        assert _decode(ptb, split) == [w for ln in split_lines for w in [*ln.split(), "<eos>"]], split


def test_wikitext2_matches_readme(shared_data: Path, tmp_path: Path) -> None:
    c = load_corpus("wikitext-2", shared_data, cache_dir=tmp_path)
    _check_counts(c, 33_278, WT2_COUNTS)
    assert c.vocab[:10] == ["the", ",", ".", "of", "<unk>", "and", "in", "to", "<eos>", "a"]


# ---------------------------------------------------------------- unigram, synthetic


def test_unigram_ppl() -> None:
    v = 50
    uniform = torch.arange(v).repeat(20)
    assert unigram_ppl(uniform, torch.arange(v), v) == pytest.approx(v)
    skewed = torch.cat([torch.zeros(1000, dtype=torch.int64), torch.arange(v)])
    assert unigram_ppl(skewed, torch.zeros(10, dtype=torch.int64), v) < 1.1
    with pytest.raises(ValueError):
        unigram_ppl(uniform, torch.tensor([v]), v)


def test_ptb_unigram_ppl_in_known_range(ptb) -> None:
    # Add-one unigram on PTB test is 639.8; a loose band catches id or smoothing mix-ups.
    assert 620 < unigram_ppl(ptb.train, ptb.test, ptb.vocab_size) < 660


def test_synthetic_corpus_deterministic_and_structured() -> None:
    a, b = synthetic_corpus(seed=3), synthetic_corpus(seed=3)
    assert a.vocab == b.vocab and all(torch.equal(getattr(a, s), getattr(b, s))
                                      for s in ("train", "valid", "test"))
    assert not torch.equal(synthetic_corpus(seed=4).train, a.train)
    c = load_corpus("synthetic", "/nonexistent")
    assert c.name == "synthetic" and _decode(c, "train") == _decode(synthetic_corpus(), "train")
    assert 100 <= c.vocab_size <= 1000 and c.vocab[0] == "<eos>"
    assert 25_000 <= c.train.numel() <= 35_000 and 4_000 <= c.valid.numel() <= 6_000
    assert c.vocab[int(c.train[-1])] == "<eos>" and int(c.train.max()) < c.vocab_size
    # An add-0.1 bigram model fitted on train must beat the unigram one by a wide margin.
    v = c.vocab_size
    counts = torch.full((v, v), 0.1, dtype=torch.float64)
    counts.index_put_((c.train[:-1], c.train[1:]), torch.ones(c.train.numel() - 1,
                      dtype=torch.float64), accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log()
    bigram = math.exp(-logp[c.test[:-1], c.test[1:]].mean().item())
    assert bigram < unigram_ppl(c.train, c.test, v) / 5


def test_generated_corpus_is_frequency_sorted() -> None:
    raw, c = synthetic_corpus(), load_corpus("synthetic")
    assert sorted(c.vocab) == sorted(raw.vocab) and len(set(c.vocab)) == c.vocab_size
    for split in ("train", "valid", "test"):  # the same words, renumbered
        assert _decode(c, split) == _decode(raw, split), split
    counts = torch.bincount(c.train, minlength=c.vocab_size).tolist()
    raw_counts = torch.bincount(raw.train, minlength=raw.vocab_size).tolist()
    assert counts[0] == max(raw_counts) and all(a >= b for a, b in zip(counts, counts[1:]))
    assert counts == sorted(raw_counts, reverse=True)
    # Ties (the words absent from train included) keep the generator's order.
    raw_id = {w: i for i, w in enumerate(raw.vocab)}
    for i in range(c.vocab_size - 1):
        if counts[i] == counts[i + 1]:
            assert raw_id[c.vocab[i]] < raw_id[c.vocab[i + 1]], (c.vocab[i], c.vocab[i + 1])
    assert counts[-1] == 0  # some generator words never occur in train; they come last
    assert c.vocab[:4] == ["<eos>", "det0", "det1", "det2"]
    assert c.vocab != raw.vocab


# ---------------------------------------------------------------- download


def test_sources_match_registry() -> None:
    for name, src in dl.SOURCES.items():
        assert set(src.sha256) == set(DATASETS[name].files.values())


def test_download_ptb_from_file_url(shared_data: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    url = (shared_data / "ptb").as_uri()
    folder = dl.download("ptb", tmp_path, base_url=url, progress=False)
    assert folder == tmp_path / "ptb"
    for fname, sha in PTB_SHA.items():
        assert dl.sha256_file(folder / fname) == sha
    assert sorted(p.name for p in folder.iterdir()) == sorted(PTB_SHA)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("fetched a file that was already present")

    monkeypatch.setattr(dl.urllib.request, "urlopen", no_network)
    dl.download("ptb", tmp_path, base_url=url, progress=False)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_downloads_and_the_corpus_cache_get_the_umasks_permissions(shared_data: Path, tmp_path: Path,
                                                                   umask: int, mode: int) -> None:
    """A data folder or cache shared by a group is readable by it: no file is left 0600 by its
    temp file."""
    old = os.umask(umask)
    try:
        folder = dl.download("ptb", tmp_path / "data", base_url=(shared_data / "ptb").as_uri(), progress=False)
        load_corpus("ptb", tmp_path / "data", cache_dir=tmp_path / "cache", check=True)
    finally:
        os.umask(old)
    written = [*folder.iterdir(), *(p for p in (tmp_path / "cache").rglob("*") if p.is_file())]
    assert len(written) > len(PTB_SHA)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: mode for p in written}


def test_download_wikitext2_zip(shared_data: Path, tmp_path: Path) -> None:
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "wikitext-2-v1.zip", "w", zipfile.ZIP_STORED) as zf:
        for f in DATASETS["wikitext-2"].files.values():
            zf.write(shared_data / "wikitext-2" / f, f"wikitext-2/{f}")
    folder = dl.download("wikitext-2", tmp_path / "out", base_url=server.as_uri(), progress=False)
    for fname, sha in dl.SOURCES["wikitext-2"].sha256.items():
        assert dl.sha256_file(folder / fname) == sha
    assert len(list(folder.iterdir())) == 3  # no leftover zip or temp files


def test_corrupted_download_raises_and_leaves_nothing(tmp_path: Path) -> None:
    server = tmp_path / "server"
    server.mkdir()
    bad = b" not the real ptb \n"
    (server / "ptb.train.txt").write_bytes(bad)
    with pytest.raises(dl.ChecksumError) as err:
        dl.download("ptb", tmp_path / "out", base_url=server.as_uri(), progress=False)
    msg = str(err.value)
    assert "ptb.train.txt" in msg and PTB_SHA["ptb.train.txt"] in msg
    assert hashlib.sha256(bad).hexdigest() in msg
    assert list((tmp_path / "out" / "ptb").iterdir()) == []


def test_unreachable_url_names_it(tmp_path: Path) -> None:
    url = (tmp_path / "nowhere").as_uri()
    with pytest.raises(dl.DownloadError, match="nowhere/ptb.train.txt"):
        dl.download("ptb", tmp_path / "out", base_url=url, progress=False)
    assert list((tmp_path / "out" / "ptb").iterdir()) == []


def test_cli_download_unpinned_wikitext103_warns(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "wikitext-103-v1.zip", "w") as zf:
        for split in ("train", "valid", "test"):
            zf.writestr(f"wikitext-103/wiki.{split}.tokens", " = a = \n")
    parser = argparse.ArgumentParser()
    dl.register(parser.add_subparsers())
    args = parser.parse_args(["download", "wikitext-103", "--to", str(tmp_path / "data"),
                              "--base-url", server.as_uri(), "--quiet"])
    assert args.func(args) == 0
    assert "NOT verified" in capsys.readouterr().err
    # Three word types under WikiText-103's names: a real load would refuse them.
    c = load_corpus("wikitext-103", tmp_path / "data", cache_dir=tmp_path / "cache", check=False)
    assert c.vocab == ["=", "<eos>", "a"]  # counts: = 2, then <eos> and a once each
    assert c.valid.tolist() == [0, 2, 0, 1]
