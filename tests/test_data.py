from __future__ import annotations

import argparse
import hashlib
import math
import os
import zipfile
from pathlib import Path

import pytest
import torch

from crt_repro.data import corpus as corpus_mod
from crt_repro.data import download as dl
from crt_repro.data import (
    DATASETS,
    DataNotFoundError,
    SegmentStream,
    batchify,
    canonical_dataset,
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


def test_canonical_dataset() -> None:
    assert canonical_dataset("wikitext-103") == "wt103"
    assert canonical_dataset("ptb") == "ptb"
    assert canonical_dataset("synthetic") == "synthetic"
    with pytest.raises(ValueError, match="'ptb2'.*wikitext-2"):
        canonical_dataset("ptb2")


def test_vocab_order_unk_and_eos(tmp_path: Path) -> None:
    _write_ptb(tmp_path / "d", " a b <unk> \n b c \n", " c zzz a \n", " a \n\n")
    c = load_corpus("ptb", tmp_path / "d", cache_dir=tmp_path / "cache")
    assert c.name == "ptb" and c.vocab == ["<eos>", "a", "b", "<unk>", "c"]
    assert c.train.dtype == torch.int64
    assert c.train.tolist() == [1, 2, 3, 0, 2, 4, 0]
    assert c.valid.tolist() == [4, 3, 1, 0]  # zzz is not in train -> <unk>
    assert c.test.tolist() == [1, 0, 0]  # an empty line still ends with <eos>


def test_unknown_word_without_unk_names_file_and_line(tmp_path: Path) -> None:
    folder = _write_ptb(tmp_path, " a b \n", " a \n", " a \n b zzz \n")
    with pytest.raises(ValueError, match=r"ptb\.test\.txt:2: .*'zzz'"):
        load_corpus("ptb", tmp_path, cache_dir=tmp_path / "cache")
    # The dataset folder itself is accepted as data_dir too.
    (folder / "ptb.test.txt").write_text(" b \n")
    assert load_corpus("ptb", folder, cache_dir=tmp_path / "cache").test.tolist() == [2, 0]


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
    first = load_corpus("ptb", data, cache_dir=cache)
    files = list(cache.glob("ptb-*.pt"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))

    def boom(path: Path) -> None:
        raise AssertionError(f"re-tokenised {path}")

    monkeypatch.setattr(corpus_mod, "read_lines", boom)
    second = load_corpus("ptb", data, cache_dir=cache)
    assert second.vocab == first.vocab
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(second, split), getattr(first, split))

    # A changed file changes the key, so the stale cache is not used.
    train = data / "ptb" / "ptb.train.txt"
    train.write_text(" a b d \n")
    os.utime(train, ns=(1, 1))
    with pytest.raises(AssertionError, match="re-tokenised"):
        load_corpus("ptb", data, cache_dir=cache)


def test_corrupted_cache_is_rebuilt(tmp_path: Path) -> None:
    data, cache = tmp_path / "d", tmp_path / "cache"
    _write_ptb(data, " a b \n", " b \n", " a \n")
    first = load_corpus("ptb", data, cache_dir=cache)
    (cache_file,) = cache.glob("ptb-*.pt")
    cache_file.write_bytes(b"\x00garbage")
    again = load_corpus("ptb", data, cache_dir=cache)
    assert again.vocab == first.vocab and torch.equal(again.train, first.train)
    assert torch.load(cache_file, weights_only=True)["vocab"] == first.vocab


@pytest.fixture(scope="session")
def ptb(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_corpus("ptb", shared_data, cache_dir=tmp_path_factory.mktemp("cache"))


# (split, tokens with eos, lines, <unk>) from ../shared/data/README.md
PTB_COUNTS = [("train", 929_589, 42_068, 45_020), ("valid", 73_760, 3_370, 3_485),
              ("test", 82_430, 3_761, 4_794)]
WT2_COUNTS = [("train", 2_088_628, 36_718, 54_625), ("valid", 217_646, 3_760, 11_718),
              ("test", 245_569, 4_358, 15_218)]


def _check_counts(c, vocab_size: int, counts: list[tuple[str, int, int, int]]) -> None:
    assert c.vocab_size == vocab_size and c.vocab[0] == "<eos>"
    unk = c.vocab.index("<unk>")
    for split, tokens, lines, unks in counts:
        ids = getattr(c, split)
        assert ids.dtype == torch.int64 and ids.dim() == 1
        assert ids.numel() == tokens, split
        assert int((ids == 0).sum()) == lines, split
        assert int((ids == unk).sum()) == unks, split


def test_ptb_matches_readme(ptb) -> None:
    _check_counts(ptb, 10_000, PTB_COUNTS)
    assert ptb.vocab[1:4] == ["aer", "banknote", "berlitz"]  # first words of ptb.train.txt


def test_wikitext2_matches_readme(shared_data: Path, tmp_path: Path) -> None:
    c = load_corpus("wikitext-2", shared_data, cache_dir=tmp_path)
    _check_counts(c, 33_278, WT2_COUNTS)


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
    assert c.name == "synthetic" and torch.equal(c.train, synthetic_corpus().train)
    assert 100 <= c.vocab_size <= 1000 and c.vocab[0] == "<eos>"
    assert 25_000 <= c.train.numel() <= 35_000 and 4_000 <= c.valid.numel() <= 6_000
    assert int(c.train[-1]) == 0 and int(c.train.max()) < c.vocab_size
    # An add-0.1 bigram model fitted on train must beat the unigram one by a wide margin.
    v = c.vocab_size
    counts = torch.full((v, v), 0.1, dtype=torch.float64)
    counts.index_put_((c.train[:-1], c.train[1:]), torch.ones(c.train.numel() - 1,
                      dtype=torch.float64), accumulate=True)
    logp = (counts / counts.sum(1, keepdim=True)).log()
    bigram = math.exp(-logp[c.test[:-1], c.test[1:]].mean().item())
    assert bigram < unigram_ppl(c.train, c.test, v) / 5


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
    c = load_corpus("wikitext-103", tmp_path / "data", cache_dir=tmp_path / "cache")
    assert c.vocab == ["<eos>", "=", "a"] and c.valid.tolist() == [1, 2, 1, 0]
