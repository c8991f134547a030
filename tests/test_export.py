"""The exported decoding step (torch.export -> ONNX -> ONNX Runtime) against ``model.step``."""
from __future__ import annotations

import pytest
import torch

from crt_repro import export
from crt_repro.config import Config, DataConfig, ModelConfig
from crt_repro.models import build_model
from crt_repro.models.decode import decode

V, SEG = 23, 7


def tiny(name, rnn="gru", **extra):
    torch.manual_seed(0)
    mcfg = ModelConfig(name=name, rnn=rnn, n_layer=2, d_model=16, n_head=2, d_inner=32, dropout=0.0, **extra)
    return build_model(Config(model=mcfg, data=DataConfig(seg_len=SEG)), V).eval()


@pytest.mark.parametrize("name,rnn,extra", [
    ("transformer_xl", "gru", {"mem_len": 4}),  # memory shorter than a segment
    ("transformer_xl", "gru", {"mem_len": 10}),  # longer: it fills over two segments
    ("crt", "gru", {"pos_encoding": "rnn_replace", "pos_rnn_init": "zeros"}),
    ("transformer_rnn_memory", "ncgru", {}),
], ids=["xl-mem4", "xl-mem10", "crt-replace-zeros", "rnn-memory"])
def test_fixed_shape_step_equals_model_step(name, rnn, extra):
    """The fixed-slot form (what is exported), run eagerly, over 5 segments."""
    model = tiny(name, rnn, **extra)
    tokens = torch.randint(0, V, (2, 5 * SEG))
    step = export.stream_step(model, SEG)
    with torch.no_grad():
        out, _ = export.run_tokens(step, tokens, SEG, step.init_state(2))
    torch.testing.assert_close(out, decode(model, tokens, SEG), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,rnn", [("transformer", "gru"), ("transformer_xl", "gru"), ("crt", "ncgru")])
def test_onnx_runtime_step_equals_eager_over_a_few_hundred_tokens(name, rnn, tmp_path):
    pytest.importorskip("onnxruntime")
    model = tiny(name, rnn)
    torch.manual_seed(1)
    tokens = torch.randint(0, V, (1, 30 * SEG))  # 210 tokens, 30 segment boundaries
    step = export.stream_step(model, SEG)
    path = export.export_onnx(step, tmp_path / "step.onnx")
    session = export.OnnxStep(path)
    out, state = export.run_tokens(session, tokens, SEG, step.init_state(1))
    torch.testing.assert_close(out, decode(model, tokens, SEG), rtol=1e-4, atol=1e-5)
    assert session.file_bytes == path.stat().st_size > 0


def test_unsupported_models_are_one_line_errors():
    with pytest.raises(ValueError, match="without memory"):
        export.stream_step(tiny("crt", memory=False), SEG)
    with pytest.raises(ValueError, match="without memory"):
        export.stream_step(tiny("transformer_rnn_posenc"), SEG)
    with pytest.raises(ValueError, match="no fixed-shape step for rmt"):
        export.stream_step(tiny("rmt"), SEG)


def test_each_models_export_step_lies_beside_the_model():
    # Issue 27, step 4: the decoding step of a model is written next to its model, not in export.py.
    from crt_repro.model_specs import MODELS

    steps = {s.name: s for s in MODELS.values() if s.export_step}
    assert set(steps) == {"transformer", "transformer_absolute", "transformer_xl", "crt", "transformer_rnn_memory",
                          "transformer_rnn_posenc"}
    for spec in steps.values():
        assert spec.export_step.split(":")[0] == spec.cls.split(":")[0], spec.name
