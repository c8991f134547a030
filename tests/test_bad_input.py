"""Bad input comes out as one line naming the culprit, never as a traceback or a silent run
(issue 13, items 9, 10, 12 and 14; run records that are not JSON besides; issue 26, items 4-7)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crt_repro import atomic
from crt_repro.cli import main
from crt_repro.config import ConfigError, build_config
from crt_repro.data.synthetic import synthetic_corpus
from crt_repro.tasks.lm import LMTask
from crt_repro.video.synthetic import synthetic_video_dir

# A run of two steps of a one-layer, 16-wide Transformer: about a second.
TINY = ["--profile", "smoke", "--model", "transformer", "--layers", "1", "--seg-len", "8",
        "--set", "optim.max_steps=2", "--set", "optim.warmup_steps=0", "--set", "model.d_model=16",
        "--set", "model.n_head=2", "--set", "model.d_inner=32", "--set", "data.max_eval_segments=2"]


def train(capsys, out: Path, *extra: str, dataset: str = "synthetic") -> tuple[int, str]:
    rc = main(["train", *TINY, "--dataset", dataset, *extra, "--out", str(out)])
    return rc, capsys.readouterr().err


def error_line(rc: int, err: str) -> str:
    """The CLI's one-line error: the last line on stderr (progress lines may come before it)."""
    assert rc == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("crt-repro train: error: "), err
    return line


def finished_run(capsys, out: Path, *extra: str, dataset: str = "synthetic") -> Path:
    rc, err = train(capsys, out, *extra, dataset=dataset)
    assert rc == 0, err
    return out


def unfinished(out: Path) -> Path:
    """A run killed after its last checkpoint: what resuming starts from."""
    (out / "metrics.json").unlink()
    return out


# --- item 9: a segment longer than a stream, non-finite numbers ---------------------------


def test_a_segment_longer_than_a_training_stream_is_refused_naming_both_lengths(capsys, tmp_path):
    cfg = build_config("smoke", "synthetic")
    n_train = min(len(synthetic_corpus().train), cfg.data.max_train_tokens)
    positions = n_train // cfg.data.batch_size - 1
    cpu = torch.device("cpu")
    LMTask(build_config("smoke", "synthetic", {"data": {"seg_len": positions}}), cpu)  # one segment: fine
    with pytest.raises(ConfigError) as e:
        LMTask(build_config("smoke", "synthetic", {"data": {"seg_len": positions + 1}}), cpu)
    assert f"data.seg_len={positions + 1}" in str(e.value) and f"{positions:,} input positions" in str(e.value)

    line = error_line(*train(capsys, tmp_path / "run", "--seg-len", "100000"))
    assert "data.seg_len=100000" in line and f"{positions:,}" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override", ["optim.lr=inf", "optim.lr=nan", "optim.lr=-inf", "model.dropout=nan",
                                      "optim.max_epochs=inf", "optim.lr_steps=[0.5, .inf]"])
def test_non_finite_numbers_fail_validation(capsys, tmp_path, override):
    line = error_line(*train(capsys, tmp_path / "run", "--set", override))
    assert f"{override.split('=')[0]}=" in line and "must be a finite number" in line
    assert not (tmp_path / "run").exists()


def test_finite_floats_still_pass():
    cfg = build_config("smoke", "synthetic", {"optim": {"lr": 1e-3, "lr_steps": [0.5], "schedule": "step"}})
    assert (cfg.optim.lr, cfg.optim.lr_steps, cfg.optim.schedule) == (1e-3, [0.5], "step")


@pytest.mark.parametrize("sets, named", [
    (["model=crt"], "--set expects section.key=value, got 'model=crt'"),
    (["data=3"], "--set expects section.key=value, got 'data=3'"),
    (["optim..lr=1"], "--set expects section.key=value, got 'optim..lr=1'"),
    (["optim.lr=1e-3", "optim.lr.x=2"], "--set 'optim.lr.x=2': lr is set both as a value and as a section"),
    (["optim.lr.x=2", "optim.lr=1e-3"], "--set 'optim.lr=1e-3': lr is set both as a section and as a value"),
])
def test_a_set_without_a_section_or_at_odds_with_another_names_it(capsys, tmp_path, sets, named):
    line = error_line(*train(capsys, tmp_path / "run", *[a for s in sets for a in ("--set", s)]))
    assert line.endswith(named), line
    assert not (tmp_path / "run").exists()


# --- item 10: unreadable checkpoints and configs, undecodable data, unusable --out ---------


@pytest.fixture
def run_dir(capsys, tmp_path) -> Path:
    return finished_run(capsys, tmp_path / "run")


@pytest.mark.parametrize("keep", [0, 0.5], ids=["empty", "truncated"])
def test_an_unreadable_checkpoint_is_named_with_how_to_start_over(capsys, run_dir, keep):
    checkpoint = unfinished(run_dir) / "checkpoint.pt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: int(len(data) * keep)])
    line = error_line(*train(capsys, run_dir))
    assert str(checkpoint) in line and "delete it to start the run over" in line
    assert len(line) < len(str(checkpoint)) + 200  # the loader's cause in brief, not its paragraph of advice
    checkpoint.unlink()  # as the message says: the run starts over
    assert train(capsys, run_dir)[0] == 0


def test_invalid_yaml_in_a_run_config_is_one_line_naming_the_file(capsys, run_dir):
    config = run_dir / "config.yaml"
    config.write_text("model: {name: transformer\ndata: [\n")
    line = error_line(*train(capsys, run_dir))
    assert f"{config}:" in line and "not valid YAML" in line and f"delete {run_dir}" in line
    rc = main(["evaluate", "--run", str(run_dir)])
    assert rc == 2 and str(config) in capsys.readouterr().err


@pytest.mark.parametrize("name", ["metrics.json", "log.jsonl"])
def test_a_run_record_that_is_not_json_is_one_line_naming_the_file(capsys, run_dir, name):
    record = run_dir / name
    if name == "log.jsonl":
        unfinished(run_dir)  # resuming rereads the log
        record.write_text(record.read_text() + '{"step": 3, "lo\n')  # a broken line, ended as a whole one
    else:
        record.write_text('{"run_id": ')
    line = error_line(*train(capsys, run_dir))
    assert str(record) in line and "not valid JSON" in line and f"delete {run_dir}" in line


def test_a_log_line_torn_by_a_kill_is_dropped_on_resume(capsys, run_dir, tmp_path):
    import shutil

    unfinished(run_dir)
    control = shutil.copytree(run_dir, tmp_path / "control")  # the same run, resumed untorn
    log = run_dir / "log.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "lo')  # killed mid-append: no newline
    for out in (run_dir, control):
        rc, err = train(capsys, out)
        assert rc == 0, err
    assert log.read_text() == (control / "log.jsonl").read_text()


def write_ptb(root: Path, n_types: int) -> Path:
    """A corpus under PTB's file names with n_types word types (PTB's checks want >= 5000)."""
    folder = root / "ptb"
    folder.mkdir(parents=True)
    words = [f"w{i}" for i in range(n_types)] + ["<unk>"]
    train = "\n".join(" ".join(words[i:i + 10]) for i in range(0, len(words), 10)) + "\n"
    (folder / "ptb.train.txt").write_text(train)
    for split in ("valid", "test"):
        (folder / f"ptb.{split}.txt").write_text(train[:3000])
    return root


def test_a_changed_corpus_warns_in_one_line_naming_the_file(tmp_path):
    # In a process of its own: pytest records warnings instead of printing them.
    data = write_ptb(tmp_path / "data", 5000)
    cmd = [sys.executable, "-m", "crt_repro", "train", *TINY, "--dataset", "ptb", "--data-dir", str(data),
           "--set", "optim.max_steps=1", "--set", "run.n_evals=0", "--out", str(tmp_path / "run")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    warnings = [line for line in p.stderr.splitlines() if "sha256 differs" in line]
    assert len(warnings) == 3 and all(line.startswith("crt-repro train: warning: ") for line in warnings)
    assert (f"crt-repro train: warning: {data / 'ptb' / 'ptb.train.txt'}: sha256 differs from the pinned ptb file "
            "(fcea919f6cf8...): results will not be comparable with runs on the canonical corpus") in warnings
    assert "UserWarning" not in p.stderr and "load_corpus(" not in p.stderr


def test_a_corpus_file_that_is_not_utf8_names_the_file_and_the_byte_offset(capsys, tmp_path):
    data = write_ptb(tmp_path / "data", 5000)
    train_file = data / "ptb" / "ptb.train.txt"
    # A two-byte character across the decoder's 1 MiB chunks, then the bad byte: the offset must
    # count from the start of the file, not of a chunk.
    head = (b"a " * (1 << 19))[: (1 << 20) - 1] + "\u00e9".encode() + b" "
    train_file.write_bytes(head + b"\xff rest\n" + train_file.read_bytes())
    line = error_line(*train(capsys, tmp_path / "run", "--data-dir", str(data), dataset="ptb"))
    assert str(train_file) in line and f"byte offset {len(head)}" in line


def test_out_that_is_a_file_is_refused(capsys, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("mine\n")
    line = error_line(*train(capsys, out))
    assert str(out) in line and "not a directory" in line
    assert out.read_text() == "mine\n"


def test_out_that_cannot_be_written_is_refused_naming_it(capsys, tmp_path, monkeypatch):
    # chmod alone cannot show it where the tests run as root, who writes anywhere.
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    line = error_line(*train(capsys, tmp_path / "ro" / "run"))
    assert "cannot write the run directory" in line and str(tmp_path / "ro" / "run") in line
    assert "Permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_out_in_a_read_only_directory_is_refused(capsys, tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        line = error_line(*train(capsys, parent / "run"))
    finally:
        parent.chmod(0o755)
    assert str(parent / "run") in line and "Permission denied" in line


@pytest.mark.filterwarnings("ignore:.*sha256 differs from the pinned")
def test_resuming_on_data_with_another_vocabulary_names_the_files(capsys, tmp_path):
    first, other = write_ptb(tmp_path / "a", 5000), write_ptb(tmp_path / "b", 5300)
    out = finished_run(capsys, tmp_path / "run", "--data-dir", str(first), dataset="ptb")
    for state in ("finished", "resuming"):
        if state == "resuming":
            unfinished(out)
        line = error_line(*train(capsys, out, "--data-dir", str(other), dataset="ptb"))
        assert "trained on other data" in line and "ptb.train.txt" in line and "size mismatch" not in line
    # A checkpoint that records no data (written before runs recorded it) fails on the shapes:
    # still one line naming the file.
    checkpoint = out / "checkpoint.pt"
    ck = torch.load(checkpoint, weights_only=False)
    torch.save({**ck, "data": None}, checkpoint)
    line = error_line(*train(capsys, out, "--data-dir", str(other), dataset="ptb"))
    assert str(checkpoint) in line and "other data" in line


# --- item 12: atomic writes honour the umask ------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_umasks_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "t.md", "x\n")
        atomic.write_json(tmp_path / "m.json", {"a": 1})
        atomic.torch_save(tmp_path / "c.pt", {"a": 1})
        folder = synthetic_video_dir(tmp_path / "cache", n_per_class=1, seed=0, size=16, n_frames=2)
    finally:
        os.umask(old)
    for name in ("t.md", "m.json", "c.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # made as a temp folder, then renamed


# --- item 14: --out pointing at someone else's directory ------------------------------------


def test_a_non_empty_directory_that_is_not_a_run_directory_is_refused(capsys, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    line = error_line(*train(capsys, out))
    assert str(out) in line and "not a run directory" in line
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train(capsys, empty)[0] == 0  # an empty directory is a fine place for a new run


# --- issue 26, item 4: a flag and a --set of its key --------------------------------------


@pytest.mark.parametrize("flag, set_", [(["--layers", "1"], "model.n_layer=4"), (["--seg-len", "8"], "data.seg_len=16"),
                                        (["--seed", "1"], "run.seed=2"), (["--model", "transformer"], "model.name=crt"),
                                        (["--rnn", "gru"], "model.rnn=ncgru"),
                                        (["--dataset", "synthetic"], "data.dataset=ptb")])
def test_a_flag_and_a_set_of_its_key_with_another_value_are_refused(capsys, tmp_path, flag, set_):
    extra = [] if flag[0] in TINY + ["--dataset"] else flag  # TINY and train() give the others
    line = error_line(*train(capsys, tmp_path / "run", *extra, "--set", set_))
    assert line.endswith(f": {' '.join(flag)} and --set {set_} disagree: give one of them"), line
    assert not (tmp_path / "run").exists()


def test_a_flag_and_a_set_of_its_key_with_the_same_value_agree():
    from crt_repro.cli import build_parser
    from crt_repro.commands import FLAG_KEYS, train_config

    args = build_parser().parse_args(["train", *TINY, "--dataset", "wikitext2", "--seed", "3", "--rnn", "gru",
                                      "--out", "x", "--set", "model.n_layer=1", "--set", "data.seg_len=8",
                                      "--set", "run.seed=3", "--set", "model.name=transformer",
                                      "--set", "model.rnn=gru", "--set", "data.dataset=wikitext-2"])
    cfg = train_config(args.profile, args.dataset, args.set, **{f: getattr(args, f) for f in FLAG_KEYS})
    assert (cfg.model.n_layer, cfg.data.seg_len, cfg.run.seed, cfg.data.dataset) == (1, 8, 3, "wikitext-2")


# --- issue 26, item 5: a negative seed ------------------------------------------------------


@pytest.mark.parametrize("extra", [["--seed", "-1"], ["--set", "run.seed=-1"]])
def test_a_negative_seed_is_refused_like_the_workflow_schema_does(capsys, tmp_path, extra):
    line = error_line(*train(capsys, tmp_path / "run", *extra))
    assert line.endswith("run.seed=-1: must be >= 0"), line
    assert not (tmp_path / "run").exists()


# --- issue 26, item 6: an empty valid or test split -----------------------------------------


@pytest.mark.parametrize("split", ["valid", "test"])
def test_an_empty_split_is_refused_before_training_naming_the_file(capsys, tmp_path, split):
    data = write_ptb(tmp_path / "data", 5000)
    empty = data / "ptb" / f"ptb.{split}.txt"
    empty.write_text("")
    line = error_line(*train(capsys, tmp_path / "run", "--data-dir", str(data), "--set", "run.n_evals=0",
                             dataset="ptb"))
    assert str(empty) in line and f"the {split} split has no words (an empty file)" in line
    assert not (tmp_path / "run").exists()  # refused before training


# --- issue 26, item 7: a full disk while writing a checkpoint -----------------------------

# What torch.save raises on a full disk: writing to a path, its own writer's enforce failure
# (no errno, no file name); writing to a Python file, the file's OSError (an errno, no file name).
TORCH_WRITE_ERRORS = {"enforce": RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
                      "enospc": OSError(28, "No space left on device")}


@pytest.mark.parametrize("error", TORCH_WRITE_ERRORS.values(), ids=TORCH_WRITE_ERRORS.keys())
def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch, error):
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    atomic.torch_save(checkpoint, {"step": 1})

    def full_disk(obj, f, *args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        atomic.torch_save(checkpoint, {"step": 2})
    cause = "no space left on device" if isinstance(error, OSError) else str(error)
    assert str(e.value) == f"cannot write {checkpoint}: {cause}; its previous version is kept"
    assert torch.load(checkpoint)["step"] == 1 and [p.name for p in checkpoint.parent.iterdir()] == ["checkpoint.pt"]


def test_a_full_disk_stops_training_in_one_line_naming_the_checkpoint(capsys, tmp_path, monkeypatch):
    def full_disk(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    line = error_line(*train(capsys, tmp_path / "run"))
    assert line == f"crt-repro train: error: cannot write {tmp_path / 'run' / 'checkpoint.pt'}: no space left on device"
