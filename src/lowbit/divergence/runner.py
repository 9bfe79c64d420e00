"""The `lowbit divergence` flow: resolve the baseline and the sequences, score the candidate against the baseline
(exact, or through the stored reference; with transformers, or with vLLM through the stored reference), write the
output run directory.

    output_dir/config.yaml        the request, as resolved (eval_dataset: divergence)
    output_dir/run.json           environment, candidate model and precision, one session (timings, memory)
    output_dir/divergence.jsonl   one line per sequence
    output_dir/metrics.json       estimates with sequence-bootstrap intervals, breakdowns by position and region

Every input is checked before anything is written or loaded: a missing run, a run without completions, a corpus
shorter than one chunk, a candidate whose tokenizer is not the baseline's, an option the backend cannot honour.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lowbit.divergence import engine, reference as stored, sequences as seqs, summary
from lowbit.errors import UsageError
from lowbit.rundir import Metrics, ModelInfo, RunConfig, RunDir, RunInfo, Session, TaskInfo

log = logging.getLogger(__name__)
TASK, VERSION = "divergence", "1"
SOURCES, REFERENCES, BACKENDS = ("run", "corpus"), ("exact", "stored"), ("transformers", "vllm")


@dataclass
class DivergenceRequest:
    baseline: str  # a baseline run directory (its model and completions) or a model (local dir or hub id)
    output_dir: str
    candidate: str | None = None  # model; default: the baseline's (emulation alone makes the difference)
    precision: str = "candidate"  # the candidate's label, as `lowbit compare` groups runs
    source: str | None = None  # run | corpus; default: run for a baseline run, corpus for a model
    corpus: str = "math500"  # math500 (solutions) or a .txt / .jsonl file
    data_dir: str | None = None  # MATH-500's local copy
    chunk_tokens: int = 512
    limit: int | None = None  # at most this many sequences
    backend: str = "transformers"  # transformers | vllm
    reference: str | None = None  # exact | stored; default: exact with transformers, stored with vllm
    top_k: int = 32
    candidate_top_k: int | None = None  # vllm: the candidate's log-probabilities returned; default 2 x top_k
    reference_dir: str | None = None  # where the stored reference lives; default: the baseline run, else output_dir
    batch_tokens: int = 16384  # padded tokens per forward pass
    dtype: str = "auto"
    device_map: str = "auto"
    emulation: dict[str, Any] = field(default_factory=dict)  # the candidate's act_quant, weight_quant, targets...
    engine: dict[str, Any] = field(default_factory=dict)  # vllm: the vLLM predictor's engine options given
    overwrite: bool = False


def run_divergence(request: DivergenceRequest) -> Path:
    """Score the candidate against the baseline and write the output run directory; returns its path."""
    request = _check_request(request)
    out = RunDir(request.output_dir)
    if out.metrics() is not None and not request.overwrite:
        raise UsageError(f"{out.path} already holds results: choose another output_dir or pass overwrite=true")
    baseline_run = _baseline_run(request.baseline)
    baseline_model = (baseline_run.config().model_name if baseline_run else None) or request.baseline
    source = request.source or ("run" if baseline_run else "corpus")
    if source == "run" and baseline_run is None:
        raise UsageError(f"source=run needs a baseline run directory, and {request.baseline} is not one: "
                         "give baseline=<output_dir of a lowbit eval run> or source=corpus")
    candidate_model = request.candidate or baseline_model
    tokenizer = _same_tokenizer(baseline_model, candidate_model, request.baseline)
    if source == "run":
        sequences = seqs.from_run(baseline_run.predictions(), tokenizer, str(baseline_run.path), request.limit)
    else:
        texts = seqs.corpus_texts(request.corpus, request.data_dir)
        sequences = seqs.from_corpus(texts, tokenizer, request.chunk_tokens, request.corpus, request.limit)

    vllm_args = None
    if request.backend == "vllm":  # checked before anything is loaded or written
        from lowbit.divergence import vllm_backend

        vllm_args = vllm_backend.engine_args(request.engine, request.dtype,
                                             max(len(s.token_ids) for s in sequences), request.candidate_top_k)

    started, began = _now(), time.perf_counter()
    options = {"dtype": request.dtype, "device_map": request.device_map, "show_progress": False}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    reference_meta: dict[str, Any] = {"mode": request.reference}
    if request.reference == "exact":
        baseline = _load(baseline_model, options)
        candidate = _load(candidate_model, {**options, **request.emulation})
        load_seconds = time.perf_counter() - began
        scoring_began = time.perf_counter()
        per_sequence = _score_exact(baseline, candidate, sequences, request.batch_tokens, pad_id)
        predictor = {"name": "transformers", "emulation": candidate.emulation.describe()}
    else:
        home = RunDir(request.reference_dir) if request.reference_dir else (baseline_run or out)
        key = stored.fingerprint(sequences, {"model": baseline_model, "dtype": request.dtype}, request.top_k)
        path = home.divergence_reference(key)
        reference_meta.update(top_k=request.top_k, file=str(path), reused=path.exists(),
                              bytes_per_token=stored.bytes_per_token(request.top_k))
        if request.backend == "vllm":
            reference_meta.update(candidate_top_k=request.candidate_top_k,
                                  kl="lower bound: the candidate's top-k only, no error bound")
            if not path.exists():
                _write_reference_vllm(path, baseline_model, vllm_args, sequences, request)
            candidate = vllm_backend.Engine(candidate_model, vllm_args)
            load_seconds = time.perf_counter() - began
            scoring_began = time.perf_counter()
            try:
                per_sequence = _score_partial(stored.read(path), candidate, sequences, request.candidate_top_k)
                predictor = candidate.describe()
            finally:
                candidate.close()
        else:
            if not path.exists():
                _write_reference(path, baseline_model, options, sequences, request, pad_id)
            candidate = _load(candidate_model, {**options, **request.emulation})
            load_seconds = time.perf_counter() - began
            scoring_began = time.perf_counter()
            per_sequence = _score_stored(stored.read(path), candidate, sequences, request.batch_tokens, pad_id)
            predictor = {"name": "transformers", "emulation": candidate.emulation.describe()}
    seconds = time.perf_counter() - scoring_began
    _write(out, request, sequences, per_sequence, baseline_model, candidate_model, source, reference_meta,
           predictor, started, load_seconds, seconds)
    return out.path


def _check_request(request: DivergenceRequest) -> DivergenceRequest:
    """The request with its backend's defaults filled in, after checking every option that needs no model."""
    if request.source is not None and request.source not in SOURCES:
        raise UsageError(f"source '{request.source}' unknown: choose {' or '.join(SOURCES)}")
    if request.backend not in BACKENDS:
        raise UsageError(f"backend '{request.backend}' unknown: choose {' or '.join(BACKENDS)}")
    if request.reference is not None and request.reference not in REFERENCES:
        raise UsageError(f"reference '{request.reference}' unknown: choose {' or '.join(REFERENCES)}")
    for key in ("top_k", "batch_tokens", "chunk_tokens"):
        if getattr(request, key) < (2 if key == "chunk_tokens" else 1):
            raise UsageError(f"{key} must be positive, got {getattr(request, key)}")
    if request.limit is not None and request.limit < 1:
        raise UsageError(f"limit must be >= 1, got {request.limit}")
    if request.backend == "vllm":
        request = _check_vllm(request)
    else:
        if request.engine:
            raise UsageError(f"predictor_conf.{sorted(request.engine)[0]} is a vLLM engine option: add backend=vllm, "
                             "or leave it out")
        if request.candidate_top_k is not None:
            raise UsageError("candidate_top_k applies to backend=vllm (transformers gives the candidate's whole "
                             "distribution): add backend=vllm, or leave it out")
        request = replace(request, reference=request.reference or "exact")
    from lowbit.quant import fake_quant

    try:  # the candidate's formats, before any model is loaded or reference written
        fake_quant.check_formats(request.emulation.get("act_quant", "none"),
                                 request.emulation.get("weight_quant", "none"))
    except ValueError as e:
        raise UsageError(f"predictor_conf.{e}") from e
    return request


def _check_vllm(request: DivergenceRequest) -> DivergenceRequest:
    if request.reference == "exact":
        raise UsageError("backend=vllm scores through the stored reference (vLLM returns top-k log-probabilities, not "
                         "whole distributions): use reference=stored, or backend=transformers for reference=exact")
    emulated = [name for name, value in request.emulation.items() if value not in (None, "none")]
    if emulated:
        raise UsageError(f"predictor_conf.{emulated[0]} is fake-quant emulation, which only backend=transformers "
                         "runs: use backend=transformers, or give the quantized checkpoint as candidate=")
    top = 2 * request.top_k if request.candidate_top_k is None else request.candidate_top_k
    if top < request.top_k:
        raise UsageError(f"candidate_top_k={top} is below top_k={request.top_k}: the candidate's returned tokens "
                         f"must be able to hold the stored ones; give candidate_top_k >= {request.top_k}")
    return replace(request, reference="stored", candidate_top_k=top)


def _baseline_run(baseline: str) -> RunDir | None:
    run = RunDir(baseline)
    if run.has_config():
        return run
    if run.has_predictions():
        raise UsageError(f"{baseline} has predictions but no config.yaml naming its model: give a run directory "
                         "written by lowbit eval")
    if run.path.is_dir() and not (run.path / "config.json").is_file():
        raise UsageError(f"{baseline} is neither a lowbit run directory (config.yaml) nor a model (config.json): "
                         "give baseline=<run dir or model>")
    return None


def _same_tokenizer(baseline_model: str, candidate_model: str, baseline: str):
    """The baseline's tokenizer, after checking the candidate's has the same vocabulary."""
    from transformers import AutoTokenizer

    def load(name: str):
        try:
            return AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot load the tokenizer of '{name}': {str(e).splitlines()[0]} (give a local "
                             "model directory, or check the hub id)") from e

    base = load(baseline_model)
    if candidate_model != baseline_model and load(candidate_model).get_vocab() != base.get_vocab():
        raise UsageError(f"candidate {candidate_model} has another tokenizer than the baseline {baseline} "
                         f"({baseline_model}): compare a model with a baseline of the same model family")
    return base


def _load(model_name: str, options: dict[str, Any]):
    from lowbit.predictors.transformers import TransformersPredictor

    class DecoderPredictor(TransformersPredictor):
        decompress_at_load = True  # the decoder runs alone, never the whole model's forward

    return DecoderPredictor(model_name, **options)


def _score_exact(baseline, candidate, sequences, batch_tokens: int, pad_id: int) -> dict[str, dict]:
    base, cand = engine.ScoringModel(baseline.model), engine.ScoringModel(candidate.model)
    results: dict[str, dict] = {}
    for batch in engine.batches(sequences, batch_tokens, pad_id):
        results.update(zip((s.id for s in batch.sequences), engine.exact_batch(base, cand, batch)))
    return results


def _offsets(sequences: list[seqs.Sequence]) -> dict[str, tuple[int, int]]:
    """Each sequence's rows in the stored reference, which holds the sequences in their given order."""
    offsets, start = {}, 0
    for sequence in sequences:
        count = len(sequence.token_ids) - sequence.first_scored
        offsets[sequence.id] = (start, start + count)
        start += count
    return offsets


def _write_reference(path: Path, model_name: str, options: dict[str, Any], sequences, request, pad_id) -> None:
    from lowbit.divergence.kl import TopK

    log.info("writing the stored reference %s (top %d)", path, request.top_k)
    baseline = _load(model_name, options)
    base = engine.ScoringModel(baseline.model)
    parts: dict[str, TopK] = {}
    for batch in engine.batches(sequences, request.batch_tokens, pad_id):
        top = engine.reference_batch(base, batch, request.top_k)
        start = 0
        for sequence, count in zip(batch.sequences, batch.scored):
            parts[sequence.id] = top.slice(start, start + count)
            start += count
    baseline.close()
    _store_reference(path, parts, sequences, model_name, request.top_k, "transformers")


def _write_reference_vllm(path: Path, model_name: str, args: dict[str, Any], sequences, request) -> None:
    from lowbit.divergence import vllm_backend
    from lowbit.divergence.kl import TopK

    log.info("writing the stored reference %s (top %d) with vLLM", path, request.top_k)
    baseline = vllm_backend.Engine(model_name, args)
    try:
        parts = {sequence.id: TopK.from_top_logprobs(*rows)
                 for sequence, rows in baseline.top_logprobs(sequences, request.top_k)}
    finally:
        baseline.close()
    _store_reference(path, parts, sequences, model_name, request.top_k, "vllm")


def _store_reference(path: Path, parts: dict, sequences, model_name: str, top_k: int, backend: str) -> None:
    """Write the per-sequence references in the sequences' order (the order `_offsets` reads them in)."""
    from lowbit.divergence.kl import TopK

    path.parent.mkdir(parents=True, exist_ok=True)
    stored.write(path, TopK.cat([parts[s.id] for s in sequences]),
                 {"model": model_name, "top_k": top_k, "sequences": len(sequences), "backend": backend})


def _score_partial(reference, candidate, sequences, candidate_top_k: int) -> dict[str, dict]:
    """The candidate's top-k' from vLLM against the stored reference, sequence by sequence as vLLM finishes them."""
    import torch

    from lowbit.divergence.kl import CandidateTopK, partial_stats

    offsets = _offsets(sequences)
    results: dict[str, dict] = {}
    for sequence, rows in candidate.top_logprobs(sequences, candidate_top_k):
        targets = torch.tensor(sequence.token_ids[sequence.first_scored:])
        stats = partial_stats(reference.slice(*offsets[sequence.id]), CandidateTopK(*rows), targets)
        results[sequence.id] = engine.split(stats, [len(targets)])[0]
    return results


def _score_stored(reference, candidate, sequences, batch_tokens: int, pad_id: int) -> dict[str, dict]:
    from lowbit.divergence.kl import TopK

    offsets = _offsets(sequences)
    cand = engine.ScoringModel(candidate.model)
    results: dict[str, dict] = {}
    for batch in engine.batches(sequences, batch_tokens, pad_id):
        rows = TopK.cat([reference.slice(*offsets[s.id]) for s in batch.sequences])
        results.update(zip((s.id for s in batch.sequences), engine.stored_batch(rows, cand, batch)))
    return results


def _write(out: RunDir, request, sequences, per_sequence, baseline_model, candidate_model, source, reference_meta,
           predictor, started, load_seconds, seconds) -> None:
    from lowbit.environment import environment, peak_memory, quantization_metadata

    ordered = [per_sequence[s.id] for s in sequences]
    positions = [list(range(s.first_scored, len(s.token_ids))) for s in sequences]
    metrics, groups = summary.summarize(ordered, [s.regions for s in sequences], positions)
    lines = [summary.sequence_line(s.id, stats, s.regions) for s, stats in zip(sequences, ordered)]
    tokens = metrics["tokens"]
    family = (RunDir(request.baseline).config().family if source == "run" else None) or baseline_model
    resolved = {"eval_dataset": TASK, "precision": request.precision, "model_name": candidate_model,
                "model": {"model_name": family}, "divergence": {**asdict(request), "source": source}}
    if request.overwrite:
        out.clear()
    out.write_config(RunConfig.from_json(resolved))
    session = Session(started=started, finished=_now(), wall_seconds=round(load_seconds + seconds, 3),
                      predicted=len(sequences), model_load_seconds=round(load_seconds, 3),
                      predictor=predictor, prompts=len(sequences),
                      prompt_tokens=sum(len(s.token_ids) for s in sequences), generate_seconds=round(seconds, 3),
                      prompt_tokens_per_second=round(tokens / seconds, 2) if seconds else None,
                      **peak_memory(), extra={"scored_tokens": tokens})
    out.write_run_info(RunInfo(environment=environment(), task=TaskInfo(TASK, VERSION),
                               model=ModelInfo(candidate_model, request.precision,
                                               quantization_metadata(candidate_model)),
                               sessions=[session]))
    out.write_divergence(lines, Metrics(task=TASK, task_version=VERSION, headline="kl_mean", metrics=metrics,
                                        groups=groups, scored_at=_now(), scoring_seconds=round(seconds, 3),
                                        extra={"divergence": {"baseline": request.baseline,
                                                              "baseline_model": baseline_model,
                                                              "candidate_model": candidate_model, "source": source,
                                                              "reference": reference_meta}}))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
