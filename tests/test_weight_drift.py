"""`crt-repro drift`: the initial weights are rebuilt exactly, and a module no gradient reaches
(CRT's memory RNN with one segment per optimiser step) is found unchanged."""
from __future__ import annotations

from pathlib import Path

from crt_repro.cli import main
from crt_repro.weight_drift import weight_drift

# CRT on the memory-reach corpus, 1 layer x 16, a few steps: seconds.
TINY = ["--profile", "smoke", "--dataset", "memory-reach", "--model", "crt", "--rnn", "ncgru", "--layers", "1",
        "--seg-len", "8", "--set", "optim.max_steps=4", "--set", "optim.warmup_steps=0", "--set", "model.d_model=16",
        "--set", "model.n_head=2", "--set", "model.d_inner=32", "--set", "data.max_eval_segments=20",
        "--set", "run.n_evals=0"]


def trained(tmp_path: Path, bptt: int) -> dict[str, float]:
    out = tmp_path / f"bptt{bptt}"
    assert main(["train", *TINY, "--set", f"optim.bptt_segments={bptt}", "--out", str(out)]) == 0
    return {r["module"]: r["relative_drift"] for r in weight_drift(out)}


def test_memory_rnn_learns_only_when_the_gradient_crosses_a_segment(tmp_path):
    one, two = trained(tmp_path, 1), trained(tmp_path, 2)
    # Detached at every segment, the memory written for the next one gets no gradient: exactly 0.
    assert one["mem_rnn"] == 0.0
    assert one["blocks"] > 1e-3 and one["pos_rnn"] > 1e-3
    assert two["mem_rnn"] > 1e-3


def test_cli_prints_a_row_per_module_and_names_a_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    (out / "checkpoint.pt").rename(tmp_path / "moved.pt")
    capsys.readouterr()
    assert main(["drift", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("crt-repro drift: error: ") and "checkpoint.pt" in err and "\n" not in err
    (tmp_path / "moved.pt").rename(out / "checkpoint.pt")
    assert main(["drift", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split()[2] for ln in lines[1:]] == ["embed", "blocks", "head", "pos_rnn", "mem_rnn"]


def test_not_a_run_directory(tmp_path, capsys):
    assert main(["drift", str(tmp_path / "nothing-here")]) == 2
    assert "config.yaml does not exist" in capsys.readouterr().err
