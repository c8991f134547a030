"""python -m crt_repro.attention_bench on the CPU at the paper's head sizes (gpu_check times it on CUDA)."""
from __future__ import annotations

import csv

import pytest

from crt_repro import attention_bench


def test_rows_time_count_and_compare_each_kernel_at_heads_38_and_41(tmp_path, capsys):
    out = tmp_path / "attention.csv"
    assert attention_bench.main(["--shape", "76:2:5:5:2", "--shape", "82:2:6:0:1", "--kernels", "sdpa", "sdpa_bool",
                                 "--repeats", "1", "--csv", str(out)]) == 0
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["d_head"], r["mem_len"], r["kernel"]) for r in rows] == [
        ("38", "5", "sdpa"), ("38", "5", "sdpa_bool"), ("41", "0", "sdpa"), ("41", "0", "sdpa_bool")]
    assert all(float(r["ms"]) > 0 and int(r["kernels"]) > 0 and float(r["rel_diff"]) < 1e-5 for r in rows)
    assert capsys.readouterr().out.count("fastest at d_head") == 2


@pytest.mark.parametrize("argv, message", [
    (["--shape", "76:2:5:5"], "d_model:n_head:seg_len:mem_len:batch"),
    (["--shape", "76:0:5:5:2"], "the others 1 or more"),
    (["--shape", "76:2:5:5:2"], "FlexAttention has no backward on the CPU"),
])
def test_bad_arguments_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit):
        attention_bench.main(argv)
    assert message in capsys.readouterr().err.splitlines()[-1]
