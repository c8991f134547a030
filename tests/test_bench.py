"""`crt-repro bench`: rows, state sizes, memory measurement, CSV; Table 6 writer."""
from __future__ import annotations

import csv
import itertools
import math

import pytest
import torch

from crt_repro import bench
from crt_repro.cli import main as cli_main

TINY = dict(d_model=16, layers=2, batch=3, vocab=20, warmup=1, repeats=2, memory=False)


def test_parse_model():
    assert bench.parse_model("crt-ncgru") == ("crt", "ncgru")
    assert bench.parse_model("transformer_xl") == ("transformer_xl", "")


def test_rows_modes_and_state_bytes():
    rows = bench.bench(["transformer", "transformer_xl", "crt-gru", "crt-ncgru"], [5, 7], **TINY)
    assert len(rows) == 4 * 2 * 3
    assert all(list(r) == list(bench.CSV_COLUMNS) for r in rows)
    d, L, b = TINY["d_model"], TINY["layers"], TINY["batch"]
    for r in rows:
        n, batch = r["seg_len"], r["batch"]
        assert batch == (1 if r["mode"] == "stream" else b)
        assert r["ms_per_batch"] > 0
        assert r["tokens_per_s"] == pytest.approx(batch * n / (r["ms_per_batch"] / 1000), rel=1e-3)
        expected = {"transformer": 0, "transformer_xl": batch * L * n * d * 4, "crt": batch * d * 4}[r["model"]]
        assert r["state_bytes"] == expected, r  # XL: L x mem_len x d; CRT: one vector per stream
        assert r["rnn"] in (("gru", "ncgru") if r["model"] == "crt" else ("",))
    order = [(r["seg_len"], r["mode"], r["model"], r["rnn"]) for r in rows[:4]]
    assert order == [(5, "train", "transformer", ""), (5, "train", "transformer_xl", ""), (5, "train", "crt", "gru"),
                     (5, "train", "crt", "ncgru")]


def test_train_step_updates_parameters_and_carries_state():
    spec = bench.BenchSpec("crt", "ncgru", 6, d_model=16, layers=1, batch=2, vocab=20)
    r = bench.Runner.from_spec(spec)
    before = [p.detach().clone() for p in r.model.parameters()]
    r.step("train")
    assert any(not torch.equal(a, p) for a, p in zip(before, r.model.parameters()))
    assert r.states["train"].shape == (2, 16) and not r.states["train"].requires_grad
    assert r.model.pos_rnn.orthogonality_error() < 1e-4  # post_step ran (inverse refreshed)


def test_bf16_runs():
    rows = bench.bench(["crt-ncgru", "transformer_xl"], [5], bf16=True, modes=["train", "stream"], **TINY)
    assert len(rows) == 4 and all(r["ms_per_batch"] > 0 for r in rows)


def test_peak_memory_in_fresh_process_grows_with_the_work():
    """Each configuration runs in its own process (ru_maxrss never decreases within one): a
    training step at batch 64 must show far more memory than streaming at batch 1."""
    spec = bench.BenchSpec("transformer", "", 32, d_model=64, layers=2, batch=64, vocab=2000)
    m_train = bench.measure_memory_subprocess(spec, "train")
    m_stream = bench.measure_memory_subprocess(spec, "stream")
    assert 0 < m_stream < m_train
    # logits alone: 64 x 32 x 2000 fp32 = 16 MB, kept for backward, plus their gradient
    assert m_train > 16


def test_cli_writes_csv_and_table(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    rc = cli_main(["bench", "--models", "transformer", "crt-gru", "--seg-lens", "4", "--d-model", "8", "--layers", "1",
                   "--n-head", "2", "--d-inner", "12",
                   "--batch", "2", "--vocab", "10", "--warmup", "0", "--repeats", "1", "--no-mem", "--csv", str(out)])
    assert rc == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(bench.CSV_COLUMNS)
    assert [(r["model"], r["mode"]) for r in rows] == [
        ("transformer", "train"), ("crt", "train"), ("transformer", "forward"), ("crt", "forward"),
        ("transformer", "stream"), ("crt", "stream")]
    text = capsys.readouterr().out
    assert "load average" in text and "ms/batch" in text and "crt-gru" in text


def test_macs_ratio_column_is_the_cost_models_ratio():
    """"MACs x TR" is fvcore's forward count of each model over the Transformer's at the row's batch."""
    from crt_repro.cost import forward_cost, segment_macs

    kw = dict(d_model=16, layers=2, vocab=20)
    macs = bench.forward_macs(["transformer", "crt-ncgru"], [5], [1, 3], **kw)
    tr_cfg = bench.BenchSpec("transformer", "", 5, **kw).config()
    tr = forward_cost(tr_cfg, 20)["macs_fwd"]
    nc_cfg = bench.BenchSpec("crt", "ncgru", 5, **kw).config()
    nc = forward_cost(nc_cfg, 20)["macs_fwd"]
    assert macs[("transformer", 5, 1)] == tr and macs[("crt-ncgru", 5, 1)] == nc > tr
    # The relative positions' W_r R (n x d x d per layer) is paid once per segment, not per stream
    assert tr_cfg.model.baseline_positions == "relative"
    assert macs[("transformer", 5, 3)] == segment_macs(tr_cfg, 20, batch=3) == 3 * tr - 2 * 2 * 5 * 16**2
    # NCGRU's d^3 Cayley product is paid once per segment, not once per stream
    assert macs[("crt-ncgru", 5, 3)] == segment_macs(nc_cfg, 20, batch=3) == 3 * nc - 2 * 2 * 16**3
    rows = bench.bench(["transformer", "crt-ncgru"], [5], modes=["train"], **TINY)
    table = bench.format_table(rows, macs).splitlines()
    assert "MACs x TR" in table[0]
    crt_line = next(line for line in table if line.startswith("crt-ncgru"))
    assert f"{macs[('crt-ncgru', 5, 3)] / macs[('transformer', 5, 3)]:.2f}" in crt_line.split()


def test_table6_rows_in_paper_order_with_paper_numbers():
    """Table 6 renders what time_table6 measured (nothing is timed while rendering)."""
    from crt_repro.report.cost_tables import TABLE6_COLUMNS, TIMING_COLUMNS, table6_cost, time_table6
    from crt_repro.report.reference import load_reference

    timings = time_table6("smoke", stand_in={"wt103": "wikitext-2"}, seg_len=12, layers=2, batch=2, warmup=0,
                          repeats=1)
    assert list(timings.columns) == list(TIMING_COLUMNS) and (timings["widths"] == "scale").all()
    df = table6_cost(timings, load_reference())
    assert list(df.columns) == list(TABLE6_COLUMNS)
    assert list(zip(df["model"], df["rnn"])) == [("transformer", ""), ("transformer_xl", ""), ("crt", "gru")]
    assert list(df["paper_params_m"]) == [151, 151, 150]
    assert list(df["paper_inference_ms"]) == [997, 1421.3, 997.5]
    assert df["ratio_to_transformer"].iloc[0] == 1.0 and (df["inference_ms"] > 0).all()
    # one round: no interval
    assert (df["timing_rounds"] == 1).all() and df["ratio_ci95_low"].isna().all()
    assert (df["inference_ms_batch1"] > 0).all() and (df["decode_ms_per_token"] > 0).all()
    assert df["device"].str.startswith("cpu").all()
    assert list(df["memory_len"]) == [0, 12, 1]
    assert df["note"].str.contains("not the paper's widths").all()
    assert (df["dataset"] == "wikitext-2").all()
    # without a reference frame the packaged copy is used; with an empty one the paper columns are NaN
    empty = load_reference().iloc[0:0]
    df2 = table6_cost(timings, empty)
    assert df2["paper_params_m"].isna().all() and (df2["inference_ms"] == df["inference_ms"]).all()
    with pytest.raises(ValueError, match=r"Table 6 timings \(crt-repro time-table6\): missing column 'widths'"):
        table6_cost(timings.drop(columns="widths"))


def test_table6_at_the_paper_widths_keeps_the_scale_device_and_precision():
    """The cpu scale times the paper's 16 x 410 on WikiText-103's vocabulary in its own fp32 on its
    own device: claim (f) is decided there, not at the scale's small widths."""
    from crt_repro.report.cost_tables import table6_configs

    paper = table6_configs("cpu", "paper")
    assert [(c.model.name, c.model.n_layer, c.model.d_model, c.data.dataset) for c in paper] == [
        ("transformer", 16, 410, "wt103"), ("transformer_xl", 16, 410, "wt103"), ("crt", 16, 410, "wt103")]
    assert all(c.model.adaptive and c.run.bf16 is False and c.run.device == "auto" for c in paper)
    assert paper[0].model.baseline_positions == "relative"
    scale = table6_configs("cpu", "scale", stand_in={"wt103": "wikitext-2"})
    assert {(c.model.d_model, c.data.dataset) for c in scale} == {(128, "wikitext-2")}
    with pytest.raises(ValueError, match="--widths 'huge'"):
        table6_configs("cpu", "huge")


def test_decode_rows_latency_percentiles_and_cache_sizes():
    rows = bench.bench(["transformer", "transformer_xl", "crt-gru"], [5], modes=["decode"], **TINY)
    d, L = TINY["d_model"], TINY["layers"]
    by = {r["model"]: r for r in rows}
    for r in rows:
        assert r["batch"] == 1 and 0 < r["ms_token_p50"] <= r["ms_token_p99"] and r["ms_token_burst"] > 0
    # at a boundary: nothing, XL's keys and values of mem_len = 5 positions, CRT's memory vector
    assert [by[m]["state_bytes"] for m in ("transformer", "transformer_xl", "crt")] == [0, L * 2 * 5 * d * 4, d * 4]
    # within a segment: XL mem_len + n - 1 positions; CRT n positions (memory token + n - 1) and
    # the states of its two RNNs (the memory RNN steps per token: no buffer of outputs)
    assert by["transformer_xl"]["cache_peak_bytes"] == L * 2 * 9 * d * 4
    assert by["crt"]["cache_peak_bytes"] == L * 2 * 5 * d * 4 + 2 * d * 4
    assert "cache peak B" in bench.format_decode_table(rows) and "burst/p50" in bench.format_decode_table(rows)


def test_throughput_columns_from_counted_macs():
    rows = bench.bench(["transformer"], [5], modes=["train", "forward"], **TINY)
    macs = bench.forward_macs(["transformer"], [5], [3], d_model=16, layers=2, vocab=20)
    bench.add_throughput(rows, macs, peak_gflops=10.0)
    train, fwd = rows
    m = macs[("transformer", 5, 3)]
    assert train["gflop_s"] == pytest.approx(6 * m / train["ms_per_batch"] / 1e6, abs=1e-3)
    assert fwd["gflop_s"] == pytest.approx(2 * m / fwd["ms_per_batch"] / 1e6, abs=1e-3)
    assert fwd["peak_share"] == pytest.approx(fwd["gflop_s"] / 10.0, abs=1e-4)
    assert bench.matmul_peak_gflops(16, repeats=1) > 0


def test_onnx_rows_report_the_exported_file_and_its_fixed_state():
    pytest.importorskip("onnxruntime")
    rows = bench.bench(["crt-gru"], [4], modes=["decode", "onnx"], **TINY)
    eager, onnx = rows
    d, L = TINY["d_model"], TINY["layers"]
    assert onnx["mode"] == "onnx" and onnx["batch"] == 1 and onnx["ms_token_p50"] > 0
    # slots for the memory token + 4 tokens in every layer, the position and memory RNNs' states
    assert onnx["state_bytes"] == onnx["cache_peak_bytes"] == L * 2 * 5 * d * 4 + 2 * d * 4
    assert eager["state_bytes"] == d * 4
    assert 0 < eager["file_bytes"] < onnx["file_bytes"]  # weights, and the graph besides


def test_cpu_clock_times_every_decoded_token_and_needs_one_thread(monkeypatch, capsys):
    ticks = itertools.count(0.0, 0.001)  # a fake thread clock: each reading 1 ms after the last
    monkeypatch.setitem(bench.CLOCKS, "cpu", lambda: next(ticks))
    threads = torch.get_num_threads()
    args = ["bench", "--models", "crt-gru", "--seg-lens", "3", "--d-model", "8", "--layers", "1", "--n-head", "2",
            "--vocab", "10", "--modes", "decode", "--warmup", "0", "--repeats", "1", "--no-mem", "--clock", "cpu"]
    try:
        torch.set_num_threads(2)
        assert cli_main(args) != 0
        assert "one thread" in capsys.readouterr().err
        torch.set_num_threads(1)
        (row,) = bench.bench(["crt-gru"], [3], modes=["decode"], clock="cpu", **TINY)
        assert row["ms_token_p50"] == row["ms_token_p99"] == pytest.approx(1.0)  # read from the chosen clock
        assert cli_main(args) == 0
        assert "decode latency by thread CPU time" in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)


def test_paired_ratio_follows_each_rounds_pair_not_the_medians():
    # The machine's load doubles in the last rounds; each round's pair shares it, so it cancels.
    load = [1, 1, 1, 2, 2, 2, 2]
    base = [10.0 * x for x in load]
    crt = [10.0 * x * r for x, r in zip(load, [1.04, 1.06, 1.05, 1.05, 1.07, 1.03, 1.05])]
    ratio, low, high = bench.paired_ratio(crt, base)
    assert ratio == pytest.approx(1.05) and low <= ratio <= high and high - low < 0.05
    assert bench.paired_ratio(base, base) == (1.0, 1.0, 1.0)
    r2 = bench.paired_ratio(crt[:2], base[:2])
    assert r2[0] == pytest.approx(1.05) and math.isnan(r2[1]) and math.isnan(r2[2])


def test_kernels_per_step_column_counts_every_mode_but_onnx():
    rows = bench.bench(["transformer", "crt-gru", "crt-gru@native"], [5, 9], modes=["train", "forward"], **TINY)
    kernels = {(r["model"], r["rnn"], r["seg_len"], r["mode"]): r["kernels"] for r in rows}
    kernels.update({(m, s, mode): k for (m, rnn, s, mode), k in kernels.items() if rnn in ("", "gru")})
    assert all(k > 0 for k in kernels.values())
    # The Transformer's kernels do not depend on the segment's length; CRT's eager GRU scan runs
    # a loop over positions: 6 kernels a position forward, 4 backward, in the position RNN, and
    # the forward alone in the memory RNN (its output only crosses, detached, into the next step)
    assert kernels["transformer", 9, "train"] == kernels["transformer", 5, "train"]
    assert kernels["crt", 9, "train"] - kernels["crt", 5, "train"] == (9 - 5) * (6 + 4 + 6)
    # The C loops (model.rnn_scan=native) are one kernel per scan, forward and backward, whatever the length
    for mode in ("train", "forward"):
        assert kernels["crt", "gru@native", 9, mode] == kernels["crt", "gru@native", 5, mode] < kernels["crt", 5, mode]
    header, *lines = bench.format_table(rows).splitlines()
    assert "kernels" in header
    crt_train = next(line for line in lines if line.startswith("crt-gru") and " train " in line).split()
    assert f"{kernels['crt', 5, 'train'] / kernels['transformer', 5, 'train']:.2f}" in crt_train


def test_cli_without_macs_leaves_the_throughput_columns_empty(tmp_path):
    out = tmp_path / "bench.csv"
    rc = cli_main(["bench", "--models", "transformer", "crt-ncgru", "--seg-lens", "4", "--d-model", "8", "--layers", "1",
                   "--n-head", "2", "--batch", "2", "--vocab", "10", "--warmup", "0", "--repeats", "1", "--modes", "train",
                   "--no-mem", "--no-macs", "--csv", str(out)])
    assert rc == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["gflop_s"] for r in rows] == ["", ""] and all(int(r["kernels"]) > 0 for r in rows)
