"""The plan of runs each paper table needs: the workflow's expansion of experiments.yaml.

``plan_workflow`` turns experiments.yaml and one profile's workflow settings into ``RunSpec``s
(the arguments of one ``crt-repro train`` call each), keyed by run id, and the tables and figures
that use them. The Snakefile imports it when it is parsed; it imports nothing heavy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from crt_repro.corpora import TRAIN_TOKENS, VOCAB_SIZES
from crt_repro.model_specs import spec_of
from crt_repro.paths import runs_dir
from crt_repro.results import ResultsError


# How long a language run trains, at a guess: a token costs about layers x 12 d^2 (attention and
# feed-forward) + d x vocabulary (the softmax), and each profile runs at one measured or guessed
# speed, tokens/s of a reference shape (tokens/s, layers, d_model, vocabulary, on what): cpu, the
# pilot's ~4,500 tokens/s per core at 3 x 128 on PTB; paper, GPU_LAYER_TOKENS_PER_S at 16 x 410 on
# WikiText-103. Epoch budgets count every epoch: early stopping may end a run sooner. The workflow
# prints the sum over a target's runs still to train, and sizes a cluster job by its run's.
GPU_LAYER_TOKENS_PER_S = 2e5  # a guess, no paper-profile run on a GPU has been timed yet: 12,500 tokens/s at 16 layers
ESTIMATE_SPEEDS = {"smoke": (4500, 3, 128, 10_000, "core"), "cpu": (4500, 3, 128, 10_000, "core"),
                   "paper": (GPU_LAYER_TOKENS_PER_S / 16, 16, 410, 267_735, "GPU")}


def corpus_tokens(cfg) -> int:
    return min(TRAIN_TOKENS.get(cfg.data.dataset, 0), cfg.data.max_train_tokens or math.inf)


def train_tokens(cfg) -> float:
    """The tokens a language run trains on: its budget in tokens, steps or epochs."""
    o = cfg.optim
    if o.max_tokens is not None:
        return o.max_tokens
    if o.max_steps is not None:
        return o.max_steps * cfg.data.batch_size * cfg.data.seg_len * o.bptt_segments
    return o.max_epochs * corpus_tokens(cfg)


def _token_cost(layers: int, d_model: int, vocab: int) -> float:
    return layers * 12 * d_model ** 2 + d_model * vocab


def estimate_hours(profile: str, configs) -> float:
    """Estimated core-hours (cpu, smoke) or GPU-hours (paper) of training these language runs."""
    speed, *shape, _ = ESTIMATE_SPEEDS[profile]
    per_s = speed * _token_cost(*shape)
    return sum(train_tokens(c) * _token_cost(c.model.n_layer, c.model.d_model,
                                             VOCAB_SIZES.get(c.data.dataset, 10_000)) / per_s
               for c in configs) / 3600


# Cluster jobs (workflow/profiles/slurm): the time and memory a language run's train job asks for.
#   minutes = min(24 h, (30 + the run's estimated minutes above) x 2^(attempt-1))
#   mem_mb  = 8000 + 64 x corpus training tokens / 1e6
# 30 minutes cover start-up and evaluations; a retry doubles the time, in case the guess was short.
# A run longer than JOB_MAX_MINUTES is cut at the limit and its retry resumes from the checkpoint.
# 8 GB hold Python, torch, CUDA and the model and optimiser copies a checkpoint makes; tokenising a
# corpus took 22 bytes per token (WikiText-2), and 64 leave room for the vocabulary and the batches.
JOB_MAX_MINUTES = 24 * 60


def job_minutes(cfg, profile: str, attempt: int = 1) -> int:
    minutes = 30 + 60 * estimate_hours(profile, [cfg])
    return min(JOB_MAX_MINUTES, math.ceil(minutes * 2 ** (attempt - 1)))


def job_mem_mb(cfg) -> int:
    return 8000 + math.ceil(64 * corpus_tokens(cfg) / 1e6)


@dataclass(frozen=True)
class RunSpec:
    """The arguments of one ``crt-repro train`` call (without --data-dir/--out).

    ``layers`` / ``seg_len`` None leave them to the profile (the video runs: their depth is the
    profile's, and they have no segment length). ``init_run`` is the run whose checkpoint this
    one starts from (the video tables' second stage); its path is in ``sets`` as
    ``model.init_from``, so it is part of the run id.
    """

    profile: str
    dataset: str
    model: str
    layers: int | None
    seg_len: int | None
    seed: int
    rnn: str | None = None
    sets: tuple[str, ...] = ()
    init_run: str | None = None

    def train_args(self) -> list[str]:
        args = ["--profile", self.profile, "--dataset", self.dataset, "--model", self.model]
        if self.layers is not None:
            args += ["--layers", str(self.layers)]
        if self.seg_len is not None:
            args += ["--seg-len", str(self.seg_len)]
        if self.rnn:
            args += ["--rnn", self.rnn]
        args += ["--seed", str(self.seed)]
        for kv in self.sets:
            args += ["--set", kv]
        return args

    def config(self):
        """The Config ``crt-repro train`` builds from these arguments (the CLI's own code path)."""
        from crt_repro.commands import train_config

        return train_config(self.profile, self.dataset, self.sets, model=self.model, layers=self.layers, rnn=self.rnn,
                            seg_len=self.seg_len, seed=self.seed)

    def run_id(self) -> str:
        return self.config().run_id()


@dataclass
class TablePlan:
    name: str
    reference: str  # table key in the reference CSV (table2)
    paper_dataset: str
    dataset: str  # what this profile runs
    paper_layers: int
    layers: int
    run_ids: list[str] = field(default_factory=list)
    # Rows not in the paper (``not_in_paper: true`` in experiments.yaml): required runs when the
    # workflow setting ``beyond_paper`` is on, else shown only once their runs exist (the target
    # ``beyond_paper`` trains them).
    optional_run_ids: list[str] = field(default_factory=list)


@dataclass
class VideoTablePlan:
    name: str
    reference: str  # table key in the reference CSV (table7)
    paper_dataset: str  # smarthome
    dataset: str  # what this profile runs (smoke: synthetic-video)
    run_ids: list[str] = field(default_factory=list)  # the measured rows' runs (not their first stage)


@dataclass
class Plan:
    profile: str
    data_dir: str | None
    runs: dict[str, RunSpec]
    tables: dict[str, TablePlan]
    figures: dict[str, str]  # figure -> table whose runs it plots
    cost_tables: list[str]
    # Tables 7 and 13: kept apart from the language runs (their own workflow rules).
    video_runs: dict[str, RunSpec] = field(default_factory=dict)
    video_tables: dict[str, VideoTablePlan] = field(default_factory=dict)
    # The memory-reach benchmark (``memory_reach`` of experiments.yaml): its runs are in ``runs``.
    reach_run_ids: list[str] = field(default_factory=list)

    def datasets_to_download(self) -> set[str]:
        generated = ("synthetic", "memory-reach")
        return {s.dataset for s in self.runs.values() if s.dataset not in generated} if self.data_dir is None else set()

    def tags(self, run_id: str) -> list[str]:
        return [t for t, p in {**self.tables, **self.video_tables}.items() if run_id in p.run_ids]


def _sets(overrides: dict[str, Any] | None) -> tuple[str, ...]:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return "null" if v is None else str(v)

    return tuple(f"{k}={fmt(v)}" for k, v in sorted((overrides or {}).items()))


def plan_workflow(experiments: dict[str, Any], settings: dict[str, Any], profile: str,
                  data_dir: str | None, reference=None) -> Plan:
    """Expand ``experiments`` (workflow/config/experiments.yaml) under one profile's workflow
    settings (workflow/config/<profile>.yaml merged with the user's --config) into runs.

    settings: ``seeds`` (list), ``extra_seeds`` (table -> {seg_lens, seeds}: more seeds for some
    segment lengths of one table), ``declared_claims`` (a claims file: each cell it declares runs
    its seeds), ``layers`` (paper layer count -> this profile's), ``datasets``
    (paper dataset -> this profile's), ``datasets_without_data_dir`` (applied after ``datasets``
    when no data_dir is given), ``set`` (section.key -> value: extra overrides of every run).
    Every (model, rnn, seg_len) of a table must be a row of the paper's table, and vice versa.
    The video tables (``video_tables``) are planned by `plan_video` (settings ``video_set``,
    ``video_two_stage``, ``k400_checkpoint``).
    """
    from crt_repro.report.reference import load_reference, reference_rows

    ref = load_reference() if reference is None else reference
    seeds = [int(s) for s in settings.get("seeds") or [0]]
    layer_map = {int(k): int(v) for k, v in (settings.get("layers") or {}).items()}
    ds_map = dict(settings.get("datasets") or {})
    no_data = dict(settings.get("datasets_without_data_dir") or {}) if data_dir is None else {}
    sets = _sets(settings.get("set"))
    extra_seeds = dict(settings.get("extra_seeds") or {})
    claim_seeds = declared_claim_seeds(settings.get("declared_claims"), experiments)
    unknown = sorted(set(extra_seeds) - set(experiments.get("tables") or {}))
    if unknown:
        raise ResultsError(f"extra_seeds: {', '.join(unknown)} is not a perplexity table of experiments.yaml")
    runs: dict[str, RunSpec] = {}
    tables: dict[str, TablePlan] = {}
    beyond_paper = bool(settings.get("beyond_paper", False))
    for name, t in (experiments.get("tables") or {}).items():
        key = t.get("reference") or name.split("_")[0]
        rows = reference_rows(key, "ppl", ref)
        paper_cells = {(r.model, r.rnn, int(r.seg_len)) for r in rows.itertuples()}
        ours = {(m["model"], m.get("rnn") or "", int(n)) for m in t["models"] if not m.get("not_in_paper")
                for n in t["seg_lens"]}
        if ours != paper_cells:
            extra, missing = sorted(ours - paper_cells), sorted(paper_cells - ours)
            raise ResultsError(f"experiments: {name} does not match the paper's {key}: "
                               f"not in the paper {extra}, missing {missing}")
        dataset = ds_map.get(t["dataset"], t["dataset"])
        dataset = no_data.get(dataset, dataset)
        layers = layer_map.get(int(t["layers"]), int(t["layers"]))
        plan = TablePlan(name, key, t["dataset"], dataset, int(t["layers"]), layers)
        extra = extra_seeds.get(name) or {}
        bad = sorted(set(int(n) for n in extra.get("seg_lens") or []) - set(int(n) for n in t["seg_lens"]))
        if bad:
            raise ResultsError(f"extra_seeds.{name}.seg_lens: {bad} not among the table's {t['seg_lens']}")
        for m in t["models"]:
            row_seg_lens = m.get("seg_lens") or t["seg_lens"]
            where = f"experiments: {name}, model {m['model']}: seg_lens {row_seg_lens}"
            outside = sorted(set(int(n) for n in row_seg_lens) - set(int(n) for n in t["seg_lens"]))
            if outside:
                raise ResultsError(f"{where} has {outside}, not among the table's {t['seg_lens']}")
            if m.get("seg_lens") and not m.get("not_in_paper"):
                raise ResultsError(f"{where} are for a row not in the paper (not_in_paper: true); a paper row has "
                                   "the table's")
            for n in row_seg_lens:
                cell_seeds = seeds + [int(s) for s in extra.get("seeds") or []
                                      if int(n) in {int(k) for k in extra.get("seg_lens") or []} and int(s) not in seeds]
                cell = (t["dataset"], int(t["layers"]), m["model"], m.get("rnn") or "", int(n))
                cell_seeds += [s for s in claim_seeds.get(cell, ()) if s not in cell_seeds]
                for seed in cell_seeds:
                    spec = RunSpec(profile, dataset, m["model"], layers, int(n), seed, m.get("rnn") or None, sets)
                    rid = spec.run_id()
                    if rid in runs and runs[rid] != spec:
                        # Two routes to one config (e.g. an rnn flag a model ignores): keep the first.
                        spec = runs[rid]
                    runs.setdefault(rid, spec)
                    ids = plan.optional_run_ids if m.get("not_in_paper") and not beyond_paper else plan.run_ids
                    if rid not in ids:
                        ids.append(rid)
        tables[name] = plan
    figures = dict(experiments.get("figures") or {})
    for fig, table in figures.items():
        if table not in tables:
            raise ResultsError(f"experiments: figure {fig} plots the runs of {table!r}, which is not a table")
    video_runs, video_tables = plan_video(experiments, settings, profile, ref)
    reach = plan_memory_reach(experiments.get("memory_reach") or {}, settings, profile)
    for rid, spec in reach.items():
        runs.setdefault(rid, spec)
    return Plan(profile, data_dir, runs, tables, figures, list(experiments.get("cost_tables") or []),
                video_runs, video_tables, list(reach))


def declared_claim_seeds(path: str | None, experiments: dict[str, Any]
                         ) -> dict[tuple[str, int, str, str, int], tuple[int, ...]]:
    """(dataset, layers, model, rnn, seg_len) -> seeds of every cell a claims file declares
    (setting ``declared_claims``), in whichever table it appears: the workflow runs each, and a
    run two tables share (Table 8's CRT is Table 2's) has the same seeds in both."""
    if not path:
        return {}
    from crt_repro.report.claims import load_declaration

    declared = load_declaration(path)
    tables = experiments.get("tables") or {}
    seeds = {}
    for comp in declared.comparisons:
        for c in (comp.a, comp.b):
            if c.table not in tables:
                raise ResultsError(f"{path}: {c.table} is not a table of experiments.yaml")
            t = tables[c.table]
            seeds[(t["dataset"], int(t["layers"]), c.model, c.rnn, c.seg_len)] = declared.seeds
    return seeds


def plan_memory_reach(spec: dict[str, Any], settings: dict[str, Any], profile: str) -> dict[str, RunSpec]:
    """The runs of the memory-reach benchmark: ``models`` x ``gaps`` x ``bptt_segments`` x seeds at
    ``seg_len``, on the generated memory-reach corpus with ``keys`` keys. The profile's
    ``memory_reach`` setting may replace ``gaps``, ``bptt_segments`` and ``seeds`` (default: the
    profile's seeds) and adds ``set`` (overrides of every such run)."""
    if not spec:
        return {}
    mine = dict(settings.get("memory_reach") or {})
    seeds = [int(s) for s in mine.get("seeds") or settings.get("seeds") or [0]]
    base = _sets(mine.get("set"))
    runs: dict[str, RunSpec] = {}
    for m in spec["models"]:
        for gap in mine.get("gaps") or spec["gaps"]:
            for bptt in mine.get("bptt_segments") or spec["bptt_segments"]:
                own = _sets({"data.reach_gap": int(gap), "data.reach_keys": int(spec.get("keys", 8)),
                             "optim.bptt_segments": int(bptt)})
                for seed in seeds:
                    run = RunSpec(profile, "memory-reach", m["model"], None, int(spec["seg_len"]), seed,
                                  m.get("rnn") or None, tuple(sorted(base + own)))
                    runs.setdefault(run.run_id(), run)
    return runs


def run_checkpoint(run_id: str, profile: str) -> str:
    """Where the workflow's run ``run_id`` keeps its checkpoint (``crt_repro.run_directory.CHECKPOINT``)."""
    return f"{runs_dir(profile)}/{run_id}/checkpoint.pt"


def plan_video(experiments: dict[str, Any], settings: dict[str, Any], profile: str,
               reference) -> tuple[dict[str, RunSpec], dict[str, VideoTablePlan]]:
    """The runs of the video tables (``video_tables`` of experiments.yaml).

    The rows of the paper's table that give a frame count (``seg_len`` in the reference CSV) are
    the paper's own models and are measured: their (model, rnn) set must equal the table's
    ``models``. The other rows are other papers' numbers, shown as reference rows.

    settings: ``seeds``, ``datasets`` (smarthome -> what this profile runs), ``video_set``
    (section.key -> value overrides of every video run), ``video_two_stage`` (a model entry's
    ``init_from: timesformer`` starts it from the checkpoint of the TimeSformer run with the same
    settings and seed, the paper's second stage; that run is planned even where no row of the
    table needs it) and ``k400_checkpoint`` (the official TimeSformer weights every TimeSformer
    run starts from, the paper's first stage; null: from scratch).
    """
    from crt_repro.report.reference import reference_rows

    seeds = [int(s) for s in settings.get("seeds") or [0]]
    ds_map = dict(settings.get("datasets") or {})
    sets = _sets(settings.get("video_set"))
    two_stage = bool(settings.get("video_two_stage", True))
    k400 = settings.get("k400_checkpoint")
    runs: dict[str, RunSpec] = {}
    tables: dict[str, VideoTablePlan] = {}

    def run_spec(dataset: str, model: str, rnn: str | None, seed: int, init_model: str | None) -> RunSpec:
        extra, init_run = (), None
        if init_model is not None and two_stage:
            first = run_spec(dataset, init_model, None, seed, None)
            init_run = first.run_id()
            runs.setdefault(init_run, first)
            extra = (f"model.init_from={run_checkpoint(init_run, profile)}",)
        elif k400 and spec_of(model).k400_start:
            extra = (f"model.init_from={k400}",)
        return RunSpec(profile, dataset, model, None, None, seed, rnn, tuple(sorted(sets + extra)), init_run)

    for name, t in (experiments.get("video_tables") or {}).items():
        key = t.get("reference") or name.split("_")[0]
        rows = reference_rows(key, "mca", reference)
        paper_cells = {(r.model, r.rnn) for r in rows.itertuples() if not _isna(r.seg_len)}
        ours = {(m["model"], m.get("rnn") or "") for m in t["models"]}
        if ours != paper_cells:
            raise ResultsError(f"experiments: {name} does not match the measured rows of the paper's {key}: "
                               f"not in the paper {sorted(ours - paper_cells)}, missing {sorted(paper_cells - ours)}")
        dataset = ds_map.get(t["dataset"], t["dataset"])
        plan = VideoTablePlan(name, key, t["dataset"], dataset)
        for m in t["models"]:
            for seed in seeds:
                spec = run_spec(dataset, m["model"], m.get("rnn") or None, seed, m.get("init_from"))
                rid = spec.run_id()
                runs.setdefault(rid, spec)
                if rid not in plan.run_ids:
                    plan.run_ids.append(rid)
        tables[name] = plan
    return runs, tables


def _isna(v: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(v))
