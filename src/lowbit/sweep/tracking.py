"""tracking=mlflow: every finished cell of a sweep, and the sweep's matrix, logged to MLflow.

    tracking: {name: mlflow, uri: null, experiment: null}    # the sweep file's block (or `tracking=mlflow`)

One MLflow experiment per sweep (named after it unless `experiment` is given) holds one MLflow run per finished
cell, named `<model>/<precision>/<task>`:

    params    the cell's resolved config (config.yaml, flattened to dotted keys), precision, bits per weight,
              the checkpoint's quantization_config essentials (`quant.*`) and the emulated formats (`emulation.*`)
    metrics   every estimate in metrics.json (`<metric>`, `<metric>.ci_low`, `.ci_high`, `.stderr`, `.n`),
              tokens/s, generation seconds, token counts, bits per weight
    tags      lowbit.sweep, lowbit.cell, lowbit.model, lowbit.precision, lowbit.task, lowbit.run_dir,
              lowbit.metrics_sha256 (which scoring of the cell this is)
    artifacts config.yaml, metrics.json

and a run named `matrix` holds the sweep's report files (markdown, CSV, JSON, HTML) as artifacts. Logging is
idempotent: a cell already logged with the same metrics.json is skipped, a rescored one is logged again (the
older MLflow run is tagged `lowbit.superseded`), and the matrix run is updated in place.

Without `uri` the store is local: a SQLite file and an artifact folder under `<sweep out>/.sweep/mlflow/`
(`mlflow ui --backend-store-uri sqlite:///<sweep out>/.sweep/mlflow/mlflow.db`). Any MLflow tracking URI
works otherwise (a server, a database); artifacts then go where that server puts them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.overrides import check_mapping, did_you_mean
from lowbit.sweep.jobs import is_done, meta_dir
from lowbit.sweep.plan import Cell, Plan

TRACKERS = ("none", "mlflow")
OPTIONS: dict[str, Any] = {"name": str, "uri": str | None, "experiment": str | None}
MATRIX_RUN = "matrix"
_PARAM_VALUE_LIMIT = 500  # MLflow keeps params up to 6000 characters; long lists are cut with a marker
_BAD_NAME_CHARS = re.compile(r"[^\w\-. /:]")


@dataclass(frozen=True)
class TrackingOptions:
    name: str = "none"
    uri: str | None = None
    experiment: str | None = None


def tracking_options(block: Mapping[str, Any] | str | None) -> TrackingOptions:
    """The sweep file's `tracking` block (a mapping, or just the tracker's name), checked: one line per problem."""
    if block is None:
        return TrackingOptions()
    if isinstance(block, str):
        block = {"name": block}
    if not isinstance(block, Mapping):
        raise UsageError(f"tracking must be a tracker name or a mapping like {{name: mlflow, uri: ...}}, got {block!r}")
    options = TrackingOptions(**check_mapping(dict(block), OPTIONS, "tracking", "tracking option"))
    if options.name not in TRACKERS:
        raise UsageError(f"unknown tracking '{options.name}'.{did_you_mean(options.name, TRACKERS)} "
                         f"Available: {', '.join(TRACKERS)}")
    return options


def make_tracker(block: Mapping[str, Any] | str | None, sweep_dir: Path, sweep_name: str) -> MlflowTracker | None:
    """The tracker the sweep asks for (None for tracking=none); fails in one line when MLflow is missing."""
    options = tracking_options(block)
    if options.name == "none":
        return None
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError("tracking=mlflow needs MLflow: pip install 'lowbit[sweep]' (mlflow-skinny, sqlalchemy, "
                         "alembic), or set tracking=none") from None
    from mlflow.exceptions import MlflowException

    try:
        return MlflowTracker(sweep_dir, options.experiment or sweep_name, options.uri)
    except (MlflowException, OSError) as error:  # a bad URI, an unreachable server, a store it cannot open
        message = " ".join(str(error).split())[:300]
        raise UsageError(f"tracking.uri={options.uri or 'the local store'}: MLflow cannot use it ({message}); "
                         "fix tracking.uri or set tracking=none") from None


def track_sweep(plan: Plan, report_files: Iterable[Path]) -> list[str]:
    """Log the sweep's finished cells not logged yet and its report files, when its `tracking` asks for it;
    the MLflow run ids of the cells logged now."""
    tracker = make_tracker(getattr(plan.spec, "tracking", None), plan.sweep_dir, plan.spec.name)
    if tracker is None:
        return []
    logged = tracker.log_cells(plan.cells)
    tracker.log_matrix(report_files)
    return logged


def cell_label(cell: Cell) -> str:
    return f"{cell.model}/{cell.precision}/{cell.task}"


class MlflowTracker:
    def __init__(self, sweep_dir: Path, experiment: str, uri: str | None = None):
        import mlflow

        self.sweep_dir = Path(sweep_dir).absolute()
        self.experiment = experiment
        local = uri is None
        store = meta_dir(self.sweep_dir) / "mlflow"
        if local:
            store.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{store / 'mlflow.db'}"
        self.uri = uri
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            self.experiment_id = found.experiment_id
        else:
            location = (store / "artifacts").as_uri() if local else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)

    # -- cells -------------------------------------------------------------------------------------------

    def log_cells(self, cells: Iterable[Cell]) -> list[str]:
        """Log each finished cell not yet logged with its current metrics; the MLflow run ids logged now."""
        return [run_id for cell in cells if (run_id := self.log_cell(cell)) is not None]

    def log_cell(self, cell: Cell) -> str | None:
        """Log one cell; None when it is not finished (scored under its own config) or already logged as it is."""
        from lowbit.rundir import CONFIG, METRICS, RunDir

        if not is_done(cell.job):
            return None
        run = RunDir(cell.job.output_dir)
        metrics, config = run.metrics(), run.config()
        digest = hashlib.sha256(run.file(METRICS).read_bytes()).hexdigest()
        previous = self._runs_of(cell)
        if any(r.data.tags.get("lowbit.metrics_sha256") == digest for r in previous):
            return None
        info = run.run_info()
        tags = {"lowbit.sweep": self.experiment, "lowbit.cell": cell_label(cell), "lowbit.model": cell.model,
                "lowbit.precision": cell.precision, "lowbit.task": cell.task,
                "lowbit.run_dir": str(run.path.absolute()), "lowbit.metrics_sha256": digest,
                "lowbit.headline": metrics.headline}
        run_id = self.client.create_run(self.experiment_id, run_name=cell_label(cell), tags=tags).info.run_id
        self._log_batch(run_id, params=cell_params(config.resolved, info, cell.precision),
                        metrics=cell_metrics(metrics, info, cell.precision))
        for name in (CONFIG, METRICS):
            self.client.log_artifact(run_id, str(run.file(name)))
        self.client.set_terminated(run_id, "FINISHED")
        for older in previous:
            self.client.set_tag(older.info.run_id, "lowbit.superseded", run_id)
        return run_id

    def _runs_of(self, cell: Cell) -> list[Any]:
        label = cell_label(cell).replace("'", "\\'")
        return self.client.search_runs([self.experiment_id], filter_string=f"tags.`lowbit.cell` = '{label}'")

    def _log_batch(self, run_id: str, params: dict[str, str], metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric, Param

        stamp = 0
        param_items = [Param(key, value) for key, value in params.items()]
        metric_items = [Metric(key, value, stamp, 0) for key, value in metrics.items()]
        for start in range(0, max(len(param_items), len(metric_items)), 100):  # MLflow's batch limits
            self.client.log_batch(run_id, params=param_items[start:start + 100],
                                  metrics=metric_items[start:start + 100])

    # -- the matrix --------------------------------------------------------------------------------------

    def log_matrix(self, files: Iterable[Path]) -> str:
        """The sweep's report files as artifacts of the experiment's `matrix` run (created once, updated)."""
        found = self.client.search_runs([self.experiment_id],
                                        filter_string=f"tags.`lowbit.kind` = '{MATRIX_RUN}'")
        if found:
            run_id = found[0].info.run_id
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=MATRIX_RUN,
                                            tags={"lowbit.kind": MATRIX_RUN, "lowbit.sweep": self.experiment}
                                            ).info.run_id
        for path in files:
            self.client.log_artifact(run_id, str(path), artifact_path=MATRIX_RUN)
        self.client.set_terminated(run_id, "FINISHED")
        return run_id


# -- what a cell logs -------------------------------------------------------------------------------------


def cell_params(resolved: Mapping[str, Any], info: Any, precision: str) -> dict[str, str]:
    """The resolved config flattened to dotted keys, with the quantization and emulation essentials."""
    params = {key: _param_value(value) for key, value in flatten(resolved).items()}
    params["precision"] = precision
    params.update({f"quant.{k}": _param_value(v) for k, v in quantization_essentials(info.quantization).items()})
    emulation = info.emulation or {}
    for key in ("act_quant", "weight_quant"):
        if key in emulation:
            params[f"emulation.{key}"] = _param_value(emulation[key])
    return {_metric_name(key): value for key, value in params.items()}


def cell_metrics(metrics: Any, info: Any, precision: str) -> dict[str, float]:
    """Every estimate of metrics.json with its interval, and the run's throughput, tokens and bits per weight."""
    from lowbit.report.bits import bits_per_weight
    from lowbit.rundir import estimate_from_json

    values: dict[str, float] = {}
    for name, value in metrics.metrics.items():
        estimate = estimate_from_json(value)
        if estimate is None or estimate.value is None:
            continue
        key = _metric_name(name)
        values[key] = estimate.value
        values[f"{key}.n"] = estimate.n
        for part in ("ci_low", "ci_high", "stderr"):
            if getattr(estimate, part) is not None:
                values[f"{key}.{part}"] = getattr(estimate, part)
    totals = info.totals
    if totals.completion_tokens_per_second is not None:
        values["completion_tokens_per_second"] = totals.completion_tokens_per_second
    if totals.prompt_tokens and totals.generate_seconds:
        values["prompt_tokens_per_second"] = round(totals.prompt_tokens / totals.generate_seconds, 2)
    values["generate_seconds"] = totals.generate_seconds
    values["prompt_tokens"] = totals.prompt_tokens
    values["completion_tokens"] = totals.completion_tokens
    bits = bits_per_weight(precision, info.quantization).bits
    if bits is not None:
        values["bits_per_weight"] = bits
    return {key: float(value) for key, value in values.items()}


def quantization_essentials(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a reader needs of a checkpoint's quantization_config: method, format, per-group weight and
    activation arguments, the ignore list, and lowbit's provenance scalars (scheme, method, group size...)."""
    if not config:
        return {}
    essentials: dict[str, Any] = {key: config[key] for key in ("quant_method", "format") if config.get(key)}
    for group, spec in (config.get("config_groups") or {}).items():
        for part in ("weights", "input_activations"):
            args = (spec or {}).get(part)
            if args:
                essentials[f"{group}.{part}"] = " ".join(
                    f"{k}={args[k]}" for k in ("num_bits", "type", "strategy", "group_size", "symmetric", "dynamic")
                    if args.get(k) is not None)
    if config.get("ignore"):
        essentials["ignore"] = ",".join(map(str, config["ignore"]))
    provenance = config.get("lowbit") or {}
    essentials.update({f"lowbit.{k}": v for k, v in provenance.items() if isinstance(v, (str, int, float, bool))})
    return essentials


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _PARAM_VALUE_LIMIT else text[:_PARAM_VALUE_LIMIT - 3] + "..."


def _metric_name(name: str) -> str:
    """MLflow names allow letters, digits, `_-. /:`; anything else (pass@1's @) becomes `_`."""
    return _BAD_NAME_CHARS.sub("_", str(name))
