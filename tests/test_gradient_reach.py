"""``crt-repro gradient-reach``: d loss(segment k) / d e_1 against finite differences, its zeros
without memory, and the CLI's CSV and figures."""
from __future__ import annotations

import csv

import pytest
import torch

from crt_repro.config import build_config
from crt_repro.gradient_reach import Cell, load_cell, reach, segment_losses

TINY = {"model": {"n_layer": 1, "d_model": 8, "n_head": 2, "d_inner": 16}, "data": {"seg_len": 4}}


def tiny_cell(rnn: str, memory: bool = True, name: str = "crt") -> Cell:
    o = {"model": {**TINY["model"], "rnn": rnn, "memory": memory, "name": name}, "data": TINY["data"]}
    return Cell(rnn, "init", build_config("smoke", "synthetic", o))


@pytest.mark.parametrize("rnn", ["gru", "ncgru"])
def test_gradient_matches_central_differences_float64(rnn):
    model, segments = load_cell(tiny_cell(rnn), n_segments=3, batch=1, dtype=torch.float64)
    model.eval()
    norms = reach(model, segments)
    with torch.no_grad():
        e1 = model.embed(segments[0][0]).clone()
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(e1.shape, generator=gen, dtype=torch.float64)
    leaf = e1.clone().requires_grad_(True)
    losses = segment_losses(model, segments, leaf)
    h = 1e-5
    with torch.no_grad():
        plus = [loss.item() for loss in segment_losses(model, segments, e1 + h * v)]
        minus = [loss.item() for loss in segment_losses(model, segments, e1 - h * v)]
    for k, loss in enumerate(losses):
        (g,) = torch.autograd.grad(loss, leaf, retain_graph=True)
        fd = (plus[k] - minus[k]) / (2 * h)
        assert torch.dot(g.flatten(), v.flatten()).item() == pytest.approx(fd, rel=1e-5), f"k={k + 1}"
        # reach()'s norms (frozen parameters, one graph, retained backward) are these gradients'.
        assert norms[k] == pytest.approx(torch.linalg.vector_norm(g).item(), rel=1e-10), f"k={k + 1}"
        assert fd != 0.0


@pytest.mark.parametrize("rnn", ["gru", "ncgru"])
def test_later_segments_reach_e1_only_through_the_memory(rnn):
    on = reach(*load_cell(tiny_cell(rnn), n_segments=3, batch=2))
    off = reach(*load_cell(tiny_cell(rnn, memory=False), n_segments=3, batch=2))
    assert on[0] > 0 and all(g > 0 for g in on[1:])
    assert off[0] > 0
    assert off[1:] == [0.0, 0.0]


def test_transformer_has_no_reach():
    norms = reach(*load_cell(tiny_cell("gru", name="transformer"), n_segments=3, batch=1))
    assert norms[0] > 0 and norms[1:] == [0.0, 0.0]


def test_cli_writes_csv_and_figures(tmp_path):
    from crt_repro.cli import main

    out_csv, png, pdf = tmp_path / "reach.csv", tmp_path / "reach.png", tmp_path / "reach.pdf"
    rc = main(["gradient-reach", "--layers", "1", "--d-model", "8", "--seg-len", "4", "--segments", "3",
               "--batch", "2", "--set", "model.n_head=2", "--csv", str(out_csv), "-o", str(png), "-o", str(pdf)])
    assert rc == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["rnn", "k", "grad_norm", "state"]
    for rnn in ("gru", "ncgru"):
        cell = [r for r in rows if r["rnn"] == rnn]
        assert [int(r["k"]) for r in cell] == [1, 2, 3]
        assert {r["state"] for r in cell} == {"init"}
        assert all(float(r["grad_norm"]) > 0 for r in cell)
    assert len(rows) == 6
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"


def test_cli_checkpoint_gives_init_and_trained(tmp_path):
    """A run directory's config.yaml and checkpoint.pt (here written by hand: no training)."""
    from crt_repro.cli import main
    from crt_repro.config import dump_yaml
    from crt_repro.run_directory import CHECKPOINT

    cell = tiny_cell("ncgru")
    model, _ = load_cell(cell, n_segments=3, batch=1)
    with torch.no_grad():
        model.mem_rnn.weight_ih.mul_(3.0)  # "trained": other weights than the seeded init
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(cell.cfg))
    torch.save({"model": model.state_dict()}, run / CHECKPOINT)
    out_csv = tmp_path / "reach.csv"
    assert main(["gradient-reach", "--checkpoint", str(run), "--segments", "3", "--batch", "1",
                 "--csv", str(out_csv)]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    init = [float(r["grad_norm"]) for r in rows if r["state"] == "init"]
    trained = [float(r["grad_norm"]) for r in rows if r["state"] == "trained"]
    assert len(init) == len(trained) == 3 and {r["rnn"] for r in rows} == {"ncgru"}
    assert init[0] == trained[0]  # segment 1 does not see the memory RNN
    assert init[1] != trained[1]


def test_cli_checkpoint_without_weights_is_one_line_naming_the_run(tmp_path, capsys):
    from crt_repro.cli import main
    from crt_repro.config import dump_yaml

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(tiny_cell("gru").cfg))
    assert main(["gradient-reach", "--checkpoint", str(run)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(run) in err and "checkpoint.pt" in err


@pytest.mark.parametrize("args, message", [
    (["--layers", "2", "--set", "model.n_layer=3"], "--layers 2 and --set model.n_layer=3 disagree"),
    (["--rnn", "ncgru", "--set", "model.rnn=gru"], "--rnn ncgru and --set model.rnn=gru disagree"),
    (["--d-model", "32", "--set", "model.d_model=16"], "--d-model 32 and --set model.d_model=16 disagree"),
])
def test_a_flag_and_a_set_of_its_key_must_agree_as_in_train(capsys, args, message):
    from crt_repro.cli import main

    assert main(["gradient-reach", "--profile", "smoke", "--dataset", "synthetic", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"crt-repro gradient-reach: error: {message}: give one of them"
