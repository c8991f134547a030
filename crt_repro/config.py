"""Typed run configuration: dataclasses filled from a YAML scale profile plus overrides.

A profile (``crt_repro/profiles/{smoke,cpu,paper}.yaml``) holds the defaults of one scale, with
per-dataset sections for settings that depend on the corpus (the paper profile's PTB and
WikiText-103 widths differ). The CLI's flags and ``--set section.key=value`` are applied on top.
Every key and value is checked: an unknown key, a wrong type or an impossible value raises
``ConfigError`` naming the key and the value, before any work starts.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from crt_repro.model_specs import ModelSpec, is_known, names, spec_of

PROFILES = ("smoke", "cpu", "paper")
LM_DATASETS = ("ptb", "wikitext-2", "wt103", "synthetic", "memory-reach")
VIDEO_DATASETS = ("smarthome", "synthetic-video")
DATASET_ALIASES = {"wikitext-103": "wt103", "wikitext103": "wt103", "wikitext2": "wikitext-2"}


# Choices that more than the config name (CLI flags): declared once, here.
RnnKind = Literal["gru", "ncgru"]
Device = Literal["auto", "cpu", "cuda"]


def choices(tp: Any) -> tuple[str, ...]:
    """The values a ``Literal`` type allows."""
    return typing.get_args(tp)


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names both."""


def later(default: Any) -> Any:
    """A key added after results were committed: it enters a run's hash only when set to something
    other than ``default``, so that committed runs keep their ids and are not retrained. Every key
    a later change adds is declared with it."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"later": True})
    return field(default=default, metadata={"later": True})


@dataclass
class ModelConfig:
    name: str = "transformer"
    rnn: RnnKind = "ncgru"  # the cell of CRT's position and memory RNNs
    n_layer: int = 3
    d_model: int = 32
    n_head: int = 4
    d_inner: int = 128
    dropout: float = 0.1  # residual branches and feed-forward
    dropout_attn: float = 0.0  # attention probabilities
    dropout_emb: float = 0.0  # embeddings and the final hidden states (AWD-style, PTB)
    tie_embeddings: bool = True
    # Adaptive softmax (Transformer-XL's on WikiText-103, div_val 1, tied): models.adaptive.
    adaptive: bool = later(False)
    adaptive_cutoffs: list[int] = later([20000, 40000, 200000])
    activation: Literal["gelu", "relu"] = "gelu"  # the feed-forward non-linearity (relu: Transformer-XL's)
    # RMT (not in the paper): memory tokens read at a segment's start and written at its end;
    # 1 gives it CRT's memory budget (one d_model vector).
    rmt_memory_tokens: int = later(1)
    # Transformer-XL: hidden states kept per layer; None means "= seg_len" (the paper's tables).
    mem_len: int | None = None
    # Memory kept in evaluation; None: mem_len. Dai et al. evaluate WT103 with 640 (their 24.0).
    eval_mem_len: int | None = None
    # XL's attention kernel (models/transformer_xl.py): auto (CPU: sdpa; CUDA: sdpa_bool) | sdpa (float
    # mask) | sdpa_bool (positions as key columns, a causal mask) | flex (FlexAttention, compiled on CUDA).
    xl_attention: Literal["auto", "sdpa", "sdpa_bool", "flex"] = later("auto")
    # CRT switches (Table 8 ablations are model names that set these).
    memory: bool = True
    pos_encoding: Literal["rnn_add", "rnn_replace", "sinusoidal", "relative"] = "rnn_add"
    # Positions of the models without an RNN position encoding: the Transformer and Table 8's
    # "+ RNN memory". relative: Transformer-XL's attention with no memory (the paper's baseline:
    # it charges its Transformer for relative positions); absolute: sinusoids added to the
    # embeddings. The default is the one runs committed before this key existed had.
    baseline_positions: Literal["relative", "absolute"] = later("absolute")
    pos_rnn_init: Literal["memory", "zeros"] = "memory"  # the position RNN's initial state
    memory_input: Literal["final_ln", "raw"] = "final_ln"  # what the memory RNN reads of the last layer
    # RNN cells (GRU and NCGRU): the reset gate after the recurrent product, r * (h W) (cuDNN's
    # form), or before it, (r * h) W (the paper's appendix).
    rnn_reset: Literal["after", "before"] = "after"
    # How the cells' recurrence runs (models/scan.py): auto (CPU: the eager loop; CUDA: cuDNN's GRU
    # where it applies, else the loop replayed as CUDA graphs) | eager | cudnn | graph | native
    # (the CPU's loops in C).
    rnn_scan: Literal["auto", "eager", "cudnn", "graph", "native"] = later("auto")
    # NCGRU
    ncgru_neumann_order: int = 2
    ncgru_exact_every: int = 100
    ncgru_n_negative: int | None = None  # -1 entries of the fixed diagonal D; null: d_model // 10
    ncgru_candidate_bias: bool = True  # a candidate bias b besides modReLU's own
    # video (TimeSformer / CR-ViT)
    image_size: int = 224
    patch_size: int = 16
    n_frames: int = 16  # frames per CR-ViT iteration
    vit_iterations: int = 2
    vit_drop_path: float = 0.1  # stochastic depth, TimeSformer's 0.1
    vit_iteration_frames: Literal["same", "split"] = "same"  # same: both iterations see the clip; split: one chunk each
    vit_memory_scope: Literal["clip", "patch"] = "clip"  # clip: one memory vector per clip; patch: one per patch position
    vit_loss_iterations: Literal["all", "last"] = "all"  # all: mean loss of both iterations; last: iteration 2 only
    # A TimeSformer checkpoint (Kinetics-400 .pyth, or a run's checkpoint.pt) to start from.
    init_from: str | None = None


@dataclass
class DataConfig:
    dataset: str = "ptb"
    data_dir: str | None = None
    seg_len: int = 70
    batch_size: int = 20
    # Tokens per optimiser step; when set, the batch (streams) follows from it, so that every
    # segment length takes the same steps over the same tokens: batch_size = round(tokens_per_step
    # / (seg_len * optim.bptt_segments)).
    tokens_per_step: int | None = later(None)
    eval_batch_size: int = 10
    # Truncations that make the smoke profile fast; None = the whole split.
    max_train_tokens: int | None = None
    max_eval_segments: int | None = None
    # memory-reach (crt_repro/data/memory_reach.py): filler tokens between a key and its recall,
    # and how many keys (chance = 1 / reach_keys).
    reach_gap: int = later(64)
    reach_keys: int = later(8)
    # video
    frames: int = 16
    resize: int = 256
    crop: int = 224
    # Pixel normalisation: kinetics (mean 0.45, std 0.225: TimeSformer's K400 checkpoint was
    # trained with it) | imagenet (0.485/0.456/0.406, 0.229/0.224/0.225).
    normalize: Literal["kinetics", "imagenet"] = "kinetics"
    num_workers: int = 0


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd"] = "adamw"  # sgd: with momentum (TimeSformer's fine-tuning recipe)
    lr: float = 2.5e-4
    momentum: float = 0.9  # sgd only
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    # Adam's epsilon also sets how far a parameter with a tiny, consistent gradient drifts per step:
    # the output rows of words absent from a small training slice.
    eps: float = 1e-8
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # warm-up as a fraction of the run (equal tokens at every seg_len)
    schedule: Literal["cosine", "step"] = "cosine"  # cosine to lr * min_lr_ratio; step: lr * step_gamma at each of lr_steps
    lr_steps: list[float] = field(default_factory=list)  # fractions of the run, e.g. [0.733, 0.933]
    step_gamma: float = 0.1
    # The training budget: exactly one of these. Tokens (targets trained on) or epochs keep every
    # run of a table on the same data whatever its segment length; steps are derived from them.
    max_steps: int | None = None
    max_tokens: int | None = None
    max_epochs: float | None = None
    clip: float = 0.25
    # One optimiser step covers this many consecutive segments of every stream. CRT's gradient
    # crosses them through the memory; every other model sees the same tokens per step, so the
    # models stay comparable step for step.
    bptt_segments: int = 2
    # NCGRU's skew-symmetric A: trained by the shared optimizer ("shared"), or by an optimizer of
    # its own (rmsprop | adam) at ncgru_a_lr, as scoRNN/NC-GRU train it.
    ncgru_a_optimizer: Literal["shared", "rmsprop", "adam"] = "shared"
    ncgru_a_lr: float | None = None


@dataclass
class RunConfig:
    seed: int = 0
    device: Device = "auto"
    # bf16 autocast: auto = where the hardware runs bf16 natively (CUDA with bf16, CPUs with
    # AVX512-BF16 or AMX), fp32 elsewhere; the precision used is recorded in metrics.json.
    bf16: bool | str = "auto"
    checkpoint_every: int = 200
    log_every: int = 10
    eval_every: int = 0  # validation every this many steps; 0: see n_evals
    n_evals: int = 0  # validations evenly spaced over the run (equal tokens apart at every seg_len)
    report: Literal["last", "best_valid"] = "last"  # the checkpoint whose test metrics are reported
    # Stop after this many validations in a row without a new best validation loss; null: never.
    early_stop_patience: int | None = later(None)
    compile: bool = later(False)  # torch.compile the model (CUDA; on CPU it needs a C++ compiler and rarely pays)


@dataclass
class Config:
    profile: str = "smoke"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def spec(self) -> ModelSpec:
        return spec_of(self.model.name)

    @property
    def is_video(self) -> bool:
        return self.spec.task == "video"

    @property
    def seg_len(self) -> int:
        """Tokens per segment; for a video model, frames per iteration (the paper's Table 7)."""
        return self.model.n_frames if self.is_video else self.data.seg_len

    def resolved_model(self) -> ModelConfig:
        """The ModelConfig the model is built from: with the settings its name fixes (its spec)."""
        return self.spec.configure(self.model, self.seg_len)

    @property
    def mem_len(self) -> int:
        """Memory length in the paper's sense: vectors carried between segments (the spec's)."""
        return self.spec.memory_len(self.resolved_model())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def relevant_dict(self) -> dict[str, Any]:
        """The settings that change this run's result: what the run id hashes.

        Keys a model ignores (XL's mem_len for CRT, the RNN cell for the Transformer, video sizes
        for a language model) and where the data lives are left out, so that two tables asking
        for the same run by different routes share it.
        """
        d = self.to_dict()
        reads = self.spec.model_keys(self.model)
        d["model"] = {k: v for k, v in d["model"].items() if k in reads}
        data = d["data"]
        for k in ("data_dir", "num_workers"):
            data.pop(k)
        if self.data.dataset != "memory-reach":
            data.pop("reach_gap")
            data.pop("reach_keys")
        for k in ("frames", "resize", "crop", "normalize") if not self.is_video else ("seg_len", "max_train_tokens"):
            data.pop(k)
        if self.spec.cell(self.model) != "ncgru":
            d["optim"].pop("ncgru_a_optimizer")
            d["optim"].pop("ncgru_a_lr")
        return d

    def hashed_dict(self) -> dict[str, Any]:
        """``relevant_dict`` without the keys declared ``later`` that hold their default."""
        d = self.relevant_dict()
        for section, key, default in later_keys():
            if key in d[section] and d[section][key] == default:
                del d[section][key]
        return d

    def run_id(self) -> str:
        """Readable prefix + stable hash of ``hashed_dict`` (not where the data lives)."""
        blob = json.dumps(self.hashed_dict(), sort_keys=True).encode()
        m = self.model
        rnn = f"-{m.rnn}" if self.spec.rnn else ""
        seg = "" if self.is_video else f"-n{self.data.seg_len}"
        name = f"{self.data.dataset}-{m.name.replace(':', '.')}{rnn}-L{m.n_layer}{seg}-s{self.run.seed}"
        return f"{name}-{hashlib.sha256(blob).hexdigest()[:10]}"


def later_keys() -> list[tuple[str, str, Any]]:
    """(section, key, default) of every key declared with ``later``."""
    return [(s.name, f.name, f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for s in dataclasses.fields(Config) if dataclasses.is_dataclass(s.default_factory)
            for f in dataclasses.fields(s.default_factory) if f.metadata.get("later")]


def rnn_kwargs(m: ModelConfig) -> dict[str, Any]:
    """The keyword arguments of ``crt_repro.models.rnn.make_rnn`` that ``m`` sets."""
    cell = {"reset": m.rnn_reset, "scan": m.rnn_scan}
    if m.rnn != "ncgru":
        return cell
    return {**cell, "neumann_order": m.ncgru_neumann_order, "exact_every": m.ncgru_exact_every,
            "n_negative": m.ncgru_n_negative, "candidate_bias": m.ncgru_candidate_bias}


# ---------------------------------------------------------------------------------------------
# Filling dataclasses from nested dicts, with type checks


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return value converted to tp when that is lossless (int -> float), else raise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(key, value, a)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp in (float, str) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def _fill(obj: Any, updates: dict[str, Any], prefix: str) -> None:
    hints = _type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r} (valid: {', '.join(sorted(names))})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a mapping, got {value!r}")
            _fill(current, value, f"{full}.")
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def _parse_scalar(text: str) -> Any:
    """``--set`` values are YAML scalars: 3, 0.1, 1e-3, true, null, gru."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["model.d_model=64", "optim.lr=1e-3"]`` into a nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        *parents, leaf = names = key.strip().split(".")
        if not parents or not all(names):
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {p} is set both as a value and as a section")
        if isinstance(node.get(leaf), dict):
            raise ConfigError(f"--set {item!r}: {leaf} is set both as a section and as a value")
        node[leaf] = _parse_scalar(text)
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def canonical_dataset(name: str) -> str:
    name = DATASET_ALIASES.get(name, name)
    if name not in LM_DATASETS + VIDEO_DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset {name!r} (valid: {', '.join(LM_DATASETS + VIDEO_DATASETS)})")
    return name


# Keys of which one is set, per section: overriding one replaces the profile's choice among them.
# The others are reset to the value that means "not this one" (a key without such a value, as
# data.batch_size, is left to follow from the one chosen).
ALTERNATIVES = {"optim": (("max_steps", "max_tokens", "max_epochs"), ("warmup_steps", "warmup_ratio")),
                "data": (("batch_size", "tokens_per_step"),)}
UNSET = {"max_steps": None, "max_tokens": None, "max_epochs": None, "warmup_steps": 0, "warmup_ratio": 0,
         "tokens_per_step": None}


def _replacing_alternatives(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``--set optim.max_steps=N`` on a profile with a token budget means N steps instead, and
    ``--set data.batch_size=B`` on one with tokens per step means B streams instead."""
    out = dict(overrides)
    for section, groups in ALTERNATIVES.items():
        given = overrides.get(section)
        if not isinstance(given, dict):
            continue
        given = dict(given)
        for group in groups:
            if any(k in given for k in group):
                for k in group:
                    if k not in given and k in UNSET and k in (base.get(section) or {}):
                        given[k] = UNSET[k]
        out[section] = given
    return out


def streams_for(cfg: Config) -> int:
    """The batch (streams) that ``data.tokens_per_step`` gives at this segment length."""
    return max(1, round(cfg.data.tokens_per_step / (cfg.data.seg_len * cfg.optim.bptt_segments)))


def load_profile(profile: str) -> dict[str, Any]:
    if profile not in PROFILES:
        raise ConfigError(f"profile: unknown profile {profile!r} (valid: {', '.join(PROFILES)})")
    return copy.deepcopy(_parsed_profile(profile))  # callers pop and merge into theirs


# A workflow plans a few hundred runs, each built from its profile: parsing the YAML once per
# process instead of once per run took planning the cpu scale from 30 s to a few.
@functools.cache
def _parsed_profile(profile: str) -> dict[str, Any]:
    text = resources.files("crt_repro").joinpath("profiles", f"{profile}.yaml").read_text()
    return yaml.safe_load(text) or {}


_type_hints = functools.cache(typing.get_type_hints)  # resolving the annotations' strings is slow


def build_config(profile: str, dataset: str, overrides: dict[str, Any] | None = None) -> Config:
    """Profile defaults, then its section for the dataset, then the overrides; validated.

    The profile's per-dataset sections (``datasets: {ptb: {...}}``) may also hold per-model
    sections (``models: {transformer_xl: {...}}``) for settings only one model has.
    """
    raw = load_profile(profile)
    dataset = canonical_dataset(dataset)
    per_dataset = raw.pop("datasets", {}) or {}
    merged = _merge(raw, per_dataset.get(dataset, {}))
    per_model = merged.pop("models", {}) or {}
    name = (overrides or {}).get("model", {}).get("name") or merged.get("model", {}).get("name")
    merged = _merge(merged, per_model.get(name, {}))
    merged = _merge(merged, {"data": {"dataset": dataset}})
    merged = _merge(merged, _replacing_alternatives(merged, overrides or {}))
    cfg = Config(profile=profile)
    _fill(cfg, {k: v for k, v in merged.items() if k != "profile"}, "")
    cfg.data.dataset = canonical_dataset(cfg.data.dataset)
    _require_known_model(cfg.model.name)  # before anything asks its spec
    if cfg.data.tokens_per_step is not None and not cfg.is_video:
        given = (overrides or {}).get("data", {}).get("batch_size")
        cfg.data.batch_size = streams_for(cfg)
        if given is not None and given != cfg.data.batch_size:
            raise ConfigError(f"data.batch_size={given!r} conflicts with data.tokens_per_step="
                              f"{cfg.data.tokens_per_step}, which gives {cfg.data.batch_size} streams: set one of them")
    validate(cfg)
    return cfg


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config saved with ``to_dict`` (a run directory's config.yaml)."""
    cfg = Config()
    _fill(cfg, d, "")
    validate(cfg)
    return cfg


def read_yaml_file(path: str | Path) -> Any:
    """A YAML file's content; a syntax error is one ConfigError naming the file, line and column."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        # One line: the error's own str() spans several, with a caret under the offending text.
        what = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ConfigError(f"{where}: not valid YAML: {what}") from e


def load_config_file(path: str | Path) -> Config:
    path = Path(path)
    d = read_yaml_file(path)
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def _require(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {why}")


def _require_known_model(name: str) -> None:
    _require(is_known(name), "model.name", name,
             f"must be one of {names()}, a package.module:Class or a crt_repro.models entry point")


def validate(cfg: Config) -> None:
    m, d, o, r = cfg.model, cfg.data, cfg.optim, cfg.run
    # inf passes the one-sided range checks below (lr > 0 holds for it); nan would fail them with a wrong reason.
    for section in (f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))):
        hints = _type_hints(type(getattr(cfg, section)))
        for f in dataclasses.fields(getattr(cfg, section)):
            value = getattr(getattr(cfg, section), f.name)
            _require(all(math.isfinite(v) for v in (value if isinstance(value, list) else [value])
                         if isinstance(v, float)), f"{section}.{f.name}", value, "must be a finite number")
            allowed = choices(hints[f.name]) if typing.get_origin(hints[f.name]) is Literal else None
            if allowed:  # the choices a field's Literal type declares, and no hand-kept copy of them
                _require(value in allowed, f"{section}.{f.name}", value,
                         f"must be {', '.join(allowed[:-1])} or {allowed[-1]}")
    _require(cfg.profile in PROFILES, "profile", cfg.profile, f"must be one of {PROFILES}")
    _require_known_model(m.name)
    _require(m.rmt_memory_tokens >= 1, "model.rmt_memory_tokens", m.rmt_memory_tokens, "must be >= 1")
    _require(d.reach_gap >= 1, "data.reach_gap", d.reach_gap, "must be >= 1")
    _require(d.reach_keys >= 2, "data.reach_keys", d.reach_keys, "must be >= 2")
    for key in ("n_layer", "d_model", "n_head", "d_inner"):
        _require(getattr(m, key) >= 1, f"model.{key}", getattr(m, key), "must be >= 1")
    _require(m.d_model % m.n_head == 0, "model.d_model", m.d_model, f"must be divisible by model.n_head={m.n_head}")
    for key in ("dropout", "dropout_attn", "dropout_emb"):
        v = getattr(m, key)
        _require(0.0 <= v < 1.0, f"model.{key}", v, "must be in [0, 1)")
    _require(m.mem_len is None or m.mem_len >= 1, "model.mem_len", m.mem_len, "must be >= 1 (or null for = seg_len)")
    _require(m.ncgru_neumann_order >= 0, "model.ncgru_neumann_order", m.ncgru_neumann_order, "must be >= 0")
    _require(m.ncgru_n_negative is None or 0 <= m.ncgru_n_negative <= m.d_model, "model.ncgru_n_negative",
             m.ncgru_n_negative, "must be in [0, d_model] or null")
    _require(m.ncgru_exact_every >= 1, "model.ncgru_exact_every", m.ncgru_exact_every, "must be >= 1")
    _require(m.eval_mem_len is None or m.eval_mem_len >= 1, "model.eval_mem_len", m.eval_mem_len,
             "must be >= 1 (or null for = mem_len)")
    _require(not (m.xl_attention == "flex" and m.dropout_attn > 0), "model.xl_attention", m.xl_attention,
             f"FlexAttention has no attention dropout (model.dropout_attn={m.dropout_attn}); use auto, sdpa or sdpa_bool")
    _require(m.rnn_scan != "cudnn" or (m.rnn, m.rnn_reset) == ("gru", "after"), "model.rnn_scan", m.rnn_scan,
             f"is torch's GRU kernel: it needs model.rnn=gru and model.rnn_reset=after, not {m.rnn} and {m.rnn_reset}")
    _require(all(c >= 1 for c in m.adaptive_cutoffs) and m.adaptive_cutoffs == sorted(set(m.adaptive_cutoffs)),
             "model.adaptive_cutoffs", m.adaptive_cutoffs, "must be increasing word counts, each >= 1")
    _require(d.seg_len >= 1, "data.seg_len", d.seg_len, "must be >= 1")
    _require(d.batch_size >= 1, "data.batch_size", d.batch_size, "must be >= 1")
    _require(d.tokens_per_step is None or d.tokens_per_step >= 1, "data.tokens_per_step", d.tokens_per_step,
             "must be >= 1 or null")
    if d.tokens_per_step is not None and not cfg.is_video:
        _require(d.batch_size == streams_for(cfg), "data.batch_size", d.batch_size,
                 f"must be {streams_for(cfg)}, what data.tokens_per_step={d.tokens_per_step} gives at data.seg_len="
                 f"{d.seg_len} and optim.bptt_segments={o.bptt_segments} (or set data.tokens_per_step: null)")
    _require(d.eval_batch_size >= 1, "data.eval_batch_size", d.eval_batch_size, "must be >= 1")
    _require(d.max_train_tokens is None or d.max_train_tokens >= 2, "data.max_train_tokens", d.max_train_tokens,
             "must be >= 2 or null")
    _require(d.max_eval_segments is None or d.max_eval_segments >= 1, "data.max_eval_segments",
             d.max_eval_segments, "must be >= 1 or null")
    video_data = d.dataset in VIDEO_DATASETS
    _require(video_data == cfg.is_video, "data.dataset", d.dataset,
             f"does not fit model.name={m.name!r} (video models need {VIDEO_DATASETS}, language models {LM_DATASETS})")
    if cfg.is_video:
        _require(m.image_size % m.patch_size == 0, "model.image_size", m.image_size,
                 f"must be divisible by model.patch_size={m.patch_size}")
        _require(d.crop == m.image_size, "data.crop", d.crop, f"must equal model.image_size={m.image_size}")
        per_clip = cfg.spec.clip_frames(m)
        _require(d.frames == per_clip, "data.frames", d.frames,
                 f"must equal the frames a clip feeds the model ({per_clip}: model.n_frames"
                 f"{' x vit_iterations' if per_clip != m.n_frames else ''})")
        _require(0.0 <= m.vit_drop_path < 1.0, "model.vit_drop_path", m.vit_drop_path, "must be in [0, 1)")
    _require(o.lr > 0, "optim.lr", o.lr, "must be > 0")
    _require(0 <= o.momentum < 1, "optim.momentum", o.momentum, "must be in [0, 1)")
    _require(all(0 < f < 1 for f in o.lr_steps) and o.lr_steps == sorted(o.lr_steps), "optim.lr_steps",
             o.lr_steps, "must be increasing fractions of the run, each in (0, 1)")
    _require(0 < o.step_gamma <= 1, "optim.step_gamma", o.step_gamma, "must be in (0, 1]")
    budgets = {k: getattr(o, k) for k in ("max_steps", "max_tokens", "max_epochs") if getattr(o, k) is not None}
    _require(len(budgets) == 1, "optim.max_steps/max_tokens/max_epochs", budgets or None,
             "set exactly one training budget (the others null)")
    _require(all(v > 0 for v in budgets.values()), f"optim.{next(iter(budgets), 'max_steps')}",
             next(iter(budgets.values()), None), "must be > 0")
    _require(o.max_tokens is None or not cfg.is_video, "optim.max_tokens", o.max_tokens,
             "is a language-model budget; a video run takes optim.max_epochs or optim.max_steps")
    _require(0.0 <= o.warmup_ratio < 1.0, "optim.warmup_ratio", o.warmup_ratio, "must be in [0, 1)")
    _require(not (o.warmup_ratio and o.warmup_steps), "optim.warmup_ratio", o.warmup_ratio,
             f"set warm-up in steps or as a ratio, not both (optim.warmup_steps={o.warmup_steps})")
    _require((o.ncgru_a_lr is None) == (o.ncgru_a_optimizer == "shared"), "optim.ncgru_a_lr", o.ncgru_a_lr,
             "is the learning rate of NCGRU's own A optimizer: set it (> 0) exactly when "
             "optim.ncgru_a_optimizer is not shared")
    _require(o.ncgru_a_lr is None or o.ncgru_a_lr > 0, "optim.ncgru_a_lr", o.ncgru_a_lr, "must be > 0")
    _require(0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio", o.min_lr_ratio, "must be in [0, 1]")
    _require(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "must be >= 0")
    _require(0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "optim.beta1/beta2", (o.beta1, o.beta2), "must be in [0, 1)")
    _require(o.eps > 0, "optim.eps", o.eps, "must be > 0")
    _require(o.warmup_steps >= 0 and (o.max_steps is None or o.warmup_steps <= o.max_steps), "optim.warmup_steps",
             o.warmup_steps, "must be in [0, max_steps]")
    _require(o.clip >= 0, "optim.clip", o.clip, "must be >= 0 (0 disables clipping)")
    _require(o.bptt_segments >= 1, "optim.bptt_segments", o.bptt_segments, "must be >= 1")
    _require(r.seed >= 0, "run.seed", r.seed, "must be >= 0")  # as the workflow's schema says
    _require(isinstance(r.bf16, bool) or r.bf16 == "auto", "run.bf16", r.bf16, "must be true, false or auto")
    _require(r.n_evals >= 0, "run.n_evals", r.n_evals, "must be >= 0")
    _require(not (r.n_evals and r.eval_every), "run.n_evals", r.n_evals,
             f"give validations as a count or an interval, not both (run.eval_every={r.eval_every})")
    _require(r.early_stop_patience is None or r.early_stop_patience >= 1, "run.early_stop_patience",
             r.early_stop_patience, "must be >= 1 or null")
    _require(r.early_stop_patience is None or r.n_evals or r.eval_every, "run.early_stop_patience",
             r.early_stop_patience, "needs validations during the run (run.n_evals or run.eval_every)")
    _require(r.checkpoint_every >= 1, "run.checkpoint_every", r.checkpoint_every, "must be >= 1")
    _require(r.log_every >= 1, "run.log_every", r.log_every, "must be >= 1")
    _require(r.eval_every >= 0, "run.eval_every", r.eval_every, "must be >= 0")


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
