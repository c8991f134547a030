"""Model registry: ``build_model(cfg, vocab_size)`` for every model name the CLI accepts."""
from __future__ import annotations

import dataclasses
from importlib import import_module

from torch import nn

from crt_repro.config import Config

# name -> "module:Class"; imported lazily so that a language-model run never imports video code.
REGISTRY = {
    "transformer": "crt_repro.models.transformer:Transformer",
    "transformer_xl": "crt_repro.models.transformer_xl:TransformerXL",
    "crt": "crt_repro.models.crt:CRT",  # model.memory / model.pos_encoding from the config
    # Table 8 ablations: CRT with memory / pos_encoding fixed by the name.
    "transformer_rnn_memory": "crt_repro.models.crt:TransformerRNNMemory",  # memory + sinusoidal
    "transformer_rnn_posenc": "crt_repro.models.crt:TransformerRNNPosEnc",  # no memory + rnn_add
    "timesformer": "crt_repro.models.vit:build_timesformer",
    "crvit": "crt_repro.models.vit:build_crvit",
}


def build_model(cfg: Config, n_out: int) -> nn.Module:
    """``n_out`` is the vocabulary size of a language model or the class count of a video model."""
    try:
        target = REGISTRY[cfg.model.name]
    except KeyError:
        raise ValueError(f"model.name={cfg.model.name!r} is not implemented (have: {', '.join(REGISTRY)})") from None
    model_cfg = cfg.model
    if model_cfg.name == "transformer_xl" and model_cfg.mem_len is None:
        model_cfg = dataclasses.replace(model_cfg, mem_len=cfg.data.seg_len)
    module, cls = target.split(":")
    return getattr(import_module(module), cls)(model_cfg, n_out)
