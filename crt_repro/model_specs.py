"""What the package knows about each model, declared once per model: ``ModelSpec``.

Config, cost, plan, report and export ask a model's spec instead of comparing its name: which
class builds it, the settings its name fixes (Table 8's ablations are CRT with memory and
positions fixed), how many vectors it carries between segments, which config keys it reads (they
make its run id), its cost formula, its label in the tables, whether it has an RNN, and its
fixed-shape decoding step for export. Nothing here imports torch: the workflow reads specs when
it plans runs.

Our models and outside ones join alike. ``spec_of(name)`` finds ``name`` among ``MODELS`` below,
else resolves it as ``package.module:Object`` or as a ``crt_repro.models`` entry point, where the
object is a ``ModelSpec`` or a model class (its ``spec`` attribute, if it has one, else the
defaults). Adding a model is one entry of ``MODELS`` and one model file (docs/adding-a-model.md).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import TYPE_CHECKING, Callable, Literal

from crt_repro import formulas

if TYPE_CHECKING:
    from crt_repro.config import ModelConfig

ENTRY_POINT_GROUP = "crt_repro.models"
PLUGIN_NAME = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# The ModelConfig keys every language model reads and every video model reads; a spec adds its own.
# adaptive_cutoffs counts only where model.adaptive is on.
LM_KEYS = ("n_layer", "d_model", "n_head", "d_inner", "dropout", "dropout_attn", "dropout_emb", "tie_embeddings",
           "adaptive", "adaptive_cutoffs", "activation")
VIDEO_KEYS = ("n_layer", "d_model", "n_head", "d_inner", "dropout", "dropout_attn", "dropout_emb", "activation",
              "image_size", "patch_size", "n_frames", "vit_iterations", "vit_drop_path", "vit_iteration_frames",
              "vit_memory_scope", "vit_loss_iterations", "init_from")
# The keys of a model with an RNN: its cell, and the NCGRU's options where the cell is one.
RNN_KEYS = ("rnn", "rnn_reset", "rnn_scan")
NCGRU_KEYS = ("ncgru_neumann_order", "ncgru_exact_every", "ncgru_n_negative", "ncgru_candidate_bias")
CRT_KEYS = ("pos_rnn_init", "memory_input")  # CRT's and its ablations' memory and position RNN choices


def _no_memory(m: ModelConfig) -> int:
    return 0


@dataclass(frozen=True)
class ModelSpec:
    """One model, for everything outside its model file.

    ``name`` and ``cls`` may be left empty in an outside model's spec: they are the name it is
    given on the command line and the object that name resolves to.
    """

    name: str = ""
    cls: str = ""  # "package.module:Class" (or a factory), called as Class(model_cfg, n_out); imported lazily
    label: str = ""  # in tables and figures; empty: the name
    task: Literal["lm", "video"] = "lm"
    reads: tuple[str, ...] = LM_KEYS  # the ModelConfig keys the model reads, besides RNN_KEYS
    rnn: bool = False  # reads RNN_KEYS (and NCGRU_KEYS with an NCGRU cell)
    # The settings the name fixes or resolves, from the ModelConfig and the segment length.
    settings: Callable[[ModelConfig, int], dict] | None = None
    # Vectors carried between segments (the tables' memory column), of the configured ModelConfig.
    memory_len: Callable[[ModelConfig], int] = _no_memory
    memory_fills: bool = False  # the memory grows over the first segments: count a cost with it full
    # Our exact forward MACs of one segment without the final LayerNorm and the softmax layer:
    # f(configured ModelConfig, seg_len, memory_len) -> {term: MACs}; None: fvcore's count alone.
    macs: Callable[[ModelConfig, int, int], dict[str, int]] | None = None
    paper_flops: Callable[[int, int, int], float] | None = None  # Table 1 as printed: f(layers, seg_len, d_model)
    paper_params: Callable[[int, int], float] | None = None  # Table 1: f(layers, d_model)
    rnn_label: str = " ({})"  # how the label names the cell
    # "module:Class" of the fixed-shape decoding step, beside the model (crt_repro.export runs it)
    export_step: str | None = None
    clip_frames: Callable[[ModelConfig], int] = lambda m: m.n_frames  # video: frames a clip feeds the model
    # video: the paper starts it from Kinetics-400 weights (the workflow's k400_checkpoint, where given)
    k400_start: bool = False

    def configure(self, m: ModelConfig, seg_len: int) -> ModelConfig:
        """The ModelConfig the model is built from: ``m`` with the settings its name fixes."""
        return dataclasses.replace(m, **self.settings(m, seg_len)) if self.settings else m

    def cell(self, m: ModelConfig) -> str:
        """The RNN cell the model runs ('' without an RNN)."""
        return m.rnn if self.rnn else ""

    def model_keys(self, m: ModelConfig) -> set[str]:
        """The ModelConfig keys that change this model's result (its run id hashes them)."""
        keys = {"name", *self.reads}
        if self.rnn:
            keys |= {*RNN_KEYS, *(NCGRU_KEYS if m.rnn == "ncgru" else ())}
        if not m.adaptive:
            keys.discard("adaptive_cutoffs")
        return keys

    def display(self, rnn: str) -> str:
        return (self.label or self.name) + (self.rnn_label.format(rnn.upper()) if rnn else "")


def _ablation(memory: bool, positions: Callable[[ModelConfig], str]):
    return lambda m, n: {"memory": memory, "pos_encoding": positions(m)}


MODELS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("transformer", "crt_repro.models.transformer:build_transformer", "Transformer",
              reads=LM_KEYS + ("baseline_positions",), macs=formulas.transformer_macs,
              paper_flops=formulas.paper_transformer_flops, paper_params=formulas.paper_transformer_params,
              export_step="crt_repro.models.transformer:transformer_step"),
    # The Transformer with sinusoidal positions added to its embeddings: not the paper's baseline
    # (whose positions are relative), a row of its own beside it in Table 2 (issue 24).
    ModelSpec("transformer_absolute", "crt_repro.models.transformer:build_transformer",
              "Transformer, absolute positions (not the paper's baseline)",
              settings=lambda m, n: {"baseline_positions": "absolute"}, macs=formulas.transformer_macs,
              export_step="crt_repro.models.transformer:transformer_step"),
    ModelSpec("transformer_xl", "crt_repro.models.transformer_xl:TransformerXL", "Transformer-XL",
              reads=LM_KEYS + ("mem_len", "eval_mem_len", "xl_attention"),
              settings=lambda m, n: {"mem_len": m.mem_len or n},  # null: the segment length (the paper's tables)
              memory_len=lambda m: m.mem_len, memory_fills=True, macs=formulas.transformer_xl_macs,
              paper_flops=formulas.paper_transformer_xl_flops, paper_params=formulas.paper_transformer_params,
              export_step="crt_repro.models.transformer_xl:XLStep"),
    ModelSpec("crt", "crt_repro.models.crt:CRT", "CRT", reads=LM_KEYS + ("memory", "pos_encoding") + CRT_KEYS,
              rnn=True, memory_len=lambda m: int(m.memory), macs=formulas.crt_macs,
              paper_flops=formulas.paper_crt_flops, paper_params=formulas.paper_crt_params, rnn_label="-{}",
              export_step="crt_repro.models.crt:CRTStep"),
    # Table 8's ablations: CRT with memory and positions fixed by the name.
    ModelSpec("transformer_rnn_memory", "crt_repro.models.crt:CRT", "Transformer + RNN memory",
              reads=LM_KEYS + ("baseline_positions",) + CRT_KEYS, rnn=True,
              # memory token and memory RNN on the baseline's own positions
              settings=_ablation(True, lambda m: "relative" if m.baseline_positions == "relative" else "sinusoidal"),
              memory_len=lambda m: 1, macs=formulas.crt_macs, export_step="crt_repro.models.crt:CRTStep"),
    ModelSpec("transformer_rnn_posenc", "crt_repro.models.crt:CRT", "Transformer + RNN pos. enc.",
              reads=LM_KEYS + CRT_KEYS, rnn=True,
              settings=_ablation(False, lambda m: "rnn_add"),  # the position RNN, no memory: nothing crosses segments
              macs=formulas.crt_macs, export_step="crt_repro.models.crt:CRTStep"),
    ModelSpec("rmt", "crt_repro.models.rmt:RMT", "RMT", reads=LM_KEYS + ("rmt_memory_tokens",),
              memory_len=lambda m: m.rmt_memory_tokens, macs=formulas.rmt_macs),
    ModelSpec("timesformer", "crt_repro.models.vit:build_timesformer", "TimeSformer", task="video", reads=VIDEO_KEYS,
              k400_start=True),
    ModelSpec("crvit", "crt_repro.models.vit:build_crvit", "CR-ViT", task="video", reads=VIDEO_KEYS, rnn=True,
              memory_len=lambda m: 1, rnn_label="-{}",
              clip_frames=lambda m: m.n_frames * (m.vit_iterations if m.vit_iteration_frames == "split" else 1)),
)}


def names(task: str | None = None) -> tuple[str, ...]:
    """Our models (of one task: lm | video)."""
    return tuple(n for n, s in MODELS.items() if task in (None, s.task))


def load(target: str):
    """The object ``package.module:attr`` names, imported now."""
    module, _, attr = target.partition(":")
    try:
        return getattr(import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.name={target!r}: cannot import {attr!r} from {module!r} ({e})") from None


def is_known(name: str) -> bool:
    """Ours, ``package.module:Object`` (not imported here) or an installed entry point."""
    return name in MODELS or bool(PLUGIN_NAME.match(name)) or bool(_entry_point(name))


def spec_of(name: str) -> ModelSpec:
    """The spec of ``model.name``; an outside model's module is imported to find it."""
    if name in MODELS:
        return MODELS[name]
    target = name if PLUGIN_NAME.match(name) else _entry_point(name)
    if not target:
        raise ValueError(f"model.name={name!r} is not a model (have: {', '.join(MODELS)}, a package.module:Class, "
                         f"or a {ENTRY_POINT_GROUP!r} entry point)")
    obj = load(target)
    spec = obj if isinstance(obj, ModelSpec) else getattr(obj, "spec", None) or ModelSpec()
    return dataclasses.replace(spec, name=name, cls=spec.cls or target, label=spec.label or name)


def _entry_point(name: str) -> str:
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP).select(name=name)
    return next(iter(eps)).value if eps else ""
