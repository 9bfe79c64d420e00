"""The run directory: the contract between eval, score and compare. Only this package knows its files.

    <output_dir>/
      config.yaml        the fully resolved config
      run.json           environment, task, model, and one entry per eval session (timings, tokens, memory)
      predictions.jsonl  one line per sample, appended chunk by chunk; a rerun skips ids already there
      scores.jsonl       one line per sample, rewritten by every scoring
      metrics.json       aggregate metrics with intervals, rewritten by every scoring
      divergence.jsonl   `lowbit divergence` runs only: one line per sequence (metrics.json holds the aggregate)

`RunDir` reads each file into its typed record (`records.py`; predictions are `lowbit.records.Prediction`) and
writes it back: whole files atomically (a temp file and a rename), predictions append-only with an fsync per
chunk. It imports nothing heavy, so a reader of runs (`lowbit compare`) needs neither the eval flow nor a model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import yaml

from lowbit.errors import UsageError
from lowbit.records import CorruptLineError, JsonlAppender, Prediction, iter_jsonl, legacy_id, temp_name_pattern
from lowbit.records import write_json_atomic, write_jsonl_atomic, write_text_atomic
from lowbit.rundir.records import (SCHEMA_KEY, SCHEMA_VERSION, Metrics, ModelInfo, RunConfig, RunInfo, ScoreRow, Session,
                                   TaskInfo, Totals, estimate_from_json)

CONFIG = "config.yaml"
RUN_INFO = "run.json"
PREDICTIONS = "predictions.jsonl"
SCORES = "scores.jsonl"
METRICS = "metrics.json"
DIVERGENCE = "divergence.jsonl"  # a `lowbit divergence` run's per-sequence lines, in place of scores.jsonl
DIVERGENCE_REFERENCE = "divergence_reference-{fingerprint}.safetensors"  # a baseline's stored top-k reference
# What each file holds, in the order a listing shows them.
RUN_FILES = {
    CONFIG: "the fully resolved config",
    RUN_INFO: "environment, model, timings, tokens/s, peak memory",
    PREDICTIONS: "one line per sample: prompt, item, completions, answers",
    SCORES: "one line per sample: extracted answer, score, truncation",
    METRICS: "headline metric with 95% interval, per-group estimates, failure counts",
    DIVERGENCE: "one line per sequence: KL, top-token agreement, log-perplexities against the baseline",
}

__all__ = ["CONFIG", "DIVERGENCE", "METRICS", "PREDICTIONS", "RUN_FILES", "RUN_INFO", "SCHEMA_VERSION", "SCORES", "Metrics",
           "ModelInfo", "RunConfig", "RunDir", "RunInfo", "ScoreRow", "Session", "TaskInfo", "Totals",
           "estimate_from_json"]


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def has_config(self) -> bool:
        return self.file(CONFIG).is_file()

    def has_predictions(self) -> bool:
        return self.file(PREDICTIONS).is_file()

    def is_scored(self) -> bool:
        return self.file(METRICS).is_file() and self.file(SCORES).is_file()

    def listing(self) -> list[tuple[str, int, str]]:
        """(name, size in bytes, what it holds) of each run file present."""
        return [(name, self.file(name).stat().st_size, what) for name, what in RUN_FILES.items()
                if self.file(name).is_file()]

    # -- reading ----------------------------------------------------------------------------------------

    def config(self) -> RunConfig | None:
        path = self.file(CONFIG)
        return RunConfig.from_json(yaml.safe_load(path.read_text()) or {}) if path.exists() else None

    def run_info(self) -> RunInfo:
        """The run's info; an empty one before the run has begun."""
        path = self.file(RUN_INFO)
        return RunInfo.from_json(json.loads(path.read_text()), str(path)) if path.exists() else RunInfo()

    def metrics(self) -> Metrics | None:
        path = self.file(METRICS)
        return Metrics.from_json(json.loads(path.read_text()), str(path)) if path.exists() else None

    def predictions(self) -> list[Prediction]:
        """All predictions, first occurrence of each id; current lines and the older `{prompt, item, preds}` ones."""
        path = self.file(PREDICTIONS)
        if not path.exists():
            return []
        seen: dict[str, Prediction] = {}
        for number, row in enumerate(self._prediction_rows(), start=1):
            try:
                prediction = Prediction.from_json(row, number)
            except (ValueError, KeyError, TypeError) as e:
                raise UsageError(f"{path} line {number} is not a prediction ({type(e).__name__}: {e}): delete that "
                                 f"line (sed -i '{number}d' {path}) and rerun the eval, which predicts its sample "
                                 "again") from e
            seen.setdefault(prediction.id, prediction)
        return list(seen.values())

    def predicted_ids(self) -> set[str]:
        if not self.file(PREDICTIONS).exists():
            return set()
        return {str(row["id"]) if "id" in row else legacy_id(row.get("item") or {}, row.get("prompt", ""))
                for row in self._prediction_rows()}

    def _prediction_rows(self) -> list[dict]:
        """The lines of predictions.jsonl. A torn last line (a crash mid-append) is dropped and its sample
        predicted again; a bad line anywhere else means the file was damaged or edited, and is refused with the
        repair, since guessing which sample it held could lose or duplicate one."""
        try:
            return list(iter_jsonl(self.file(PREDICTIONS)))
        except CorruptLineError as e:
            raise UsageError(f"{e.path} line {e.line} is not valid JSON ({e.reason}): delete that line "
                             f"(sed -i '{e.line}d' {e.path}) and rerun the same command, which predicts its sample "
                             "again") from e

    def scores(self) -> list[ScoreRow]:
        """The rows of scores.jsonl (empty before the run is scored)."""
        path = self.file(SCORES)
        if not path.exists():
            return []
        try:
            rows = list(iter_jsonl(path))
        except CorruptLineError as e:
            raise UsageError(f"{e.path} line {e.line} is not valid JSON ({e.reason}): rescore the run with "
                             f"lowbit score -c {self.path}") from e
        return [ScoreRow.from_json(row, f"{path}: line {number}") for number, row in enumerate(rows, start=1)]

    # -- writing ----------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Remove every run file (a run started over)."""
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)

    def remove_stale_temporaries(self) -> list[Path]:
        """Remove the temp files of whole-file writes that a killed process left behind (a completed write
        renames its temp file away, so every one found before this process writes is stale); returns them."""
        stale = [tmp for name in (CONFIG, RUN_INFO, SCORES, METRICS, DIVERGENCE)
                 for tmp in self.path.glob(temp_name_pattern(self.file(name)))] if self.path.is_dir() else []
        for tmp in stale:
            tmp.unlink(missing_ok=True)
        return stale

    def check_writable(self) -> None:
        """Refuse, in one line, an output_dir that is a file or cannot be written (checked before a model loads)."""
        existing = next((p for p in (self.path, *self.path.parents) if p.exists()), None)
        if existing is None:
            return
        if existing == self.path and not existing.is_dir():
            raise UsageError(f"output_dir {self.path} is a file: choose a directory path for output_dir")
        if not existing.is_dir():
            raise UsageError(f"output_dir {self.path} lies under the file {existing}: choose another output_dir")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UsageError(f"output_dir {self.path} cannot be written ({existing} is not writable by this user): "
                             "choose another output_dir or fix its permissions")
        for name in (PREDICTIONS, CONFIG, RUN_INFO, SCORES, METRICS):
            path = self.file(name)
            if existing == self.path and path.exists() and not os.access(path, os.R_OK | os.W_OK):
                raise UsageError(f"{path} cannot be read and written by this user: fix its permissions or choose "
                                 "another output_dir")

    def write_config(self, config: RunConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.file(CONFIG), yaml.safe_dump(config.to_json(), sort_keys=False, allow_unicode=True))

    def write_run_info(self, info: RunInfo) -> None:
        write_json_atomic(self.file(RUN_INFO), info.to_json())

    def record_session(self, session: Session) -> RunInfo:
        """Append an eval session to run.json (recorded as it starts; its index is the last of the sessions)."""
        info = self.run_info()
        info.sessions.append(session)
        self.write_run_info(info)
        return info

    def update_session(self, index: int, session: Session) -> RunInfo:
        """Rewrite a recorded session with its progress so far (its totals follow), so a session that is killed
        still counts every prediction it wrote."""
        info = self.run_info()
        info.sessions[index] = session
        self.write_run_info(info)
        return info

    def prediction_writer(self) -> JsonlAppender:
        return JsonlAppender(self.file(PREDICTIONS))

    def write_scores(self, rows: Iterable[ScoreRow], metrics: Metrics) -> None:
        write_jsonl_atomic(self.file(SCORES), (row.to_line() for row in rows))
        write_json_atomic(self.file(METRICS), metrics.to_json())

    # -- token-level divergence (lowbit.divergence) -------------------------------------------------------

    def write_divergence(self, lines: Iterable[dict], metrics: Metrics) -> None:
        """A divergence run's per-sequence lines and its metrics."""
        write_jsonl_atomic(self.file(DIVERGENCE), ({SCHEMA_KEY: SCHEMA_VERSION, **line} for line in lines))
        write_json_atomic(self.file(METRICS), metrics.to_json())

    def divergence_lines(self) -> list[dict]:
        path = self.file(DIVERGENCE)
        return [row for row in iter_jsonl(path)] if path.exists() else []

    def divergence_reference(self, fingerprint: str) -> Path:
        """Where the stored reference of the sequences with this fingerprint lives (it may not exist yet)."""
        return self.file(DIVERGENCE_REFERENCE.format(fingerprint=fingerprint))
