"""`lowbit` command line: eval | score | compare | demo.

    lowbit eval model=qwen3_4B eval_dataset=mmlu-redux output_dir=outputs/qwen3_4B_bf16_mmlu_redux
    lowbit score -c outputs/qwen3_4B_bf16_mmlu_redux [--check-truncation] [dataset.answer_key=ok_only]
    lowbit compare 'outputs/qwen3_4B_*_mmlu_redux' baseline=bf16 margin=1.0 [--out reports/]
    lowbit demo
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from lowbit.errors import UsageError

EVAL_EPILOG = """\
overrides use Hydra syntax (key=value), e.g.
  model=qwen3_4B | qwen3_1.7B | qwen3_30B_A3B_instruct | gpt_oss_20B
  model_name=<hub id or local dir>      precision=<label>        eval_dataset=mmlu-redux
  eval_dataset_config=<sampling block>  output_dir=<dir>         data_dir=<local dataset copy>
  debug=true  limit=N  seed=S  overwrite=true
  predictor=transformers  predictor_conf.batch_size=16  predictor_conf.dtype=bfloat16
  sampling.temperature=0  sampling.max_sequence_length=8192  dataset.subset=seed30
The full reference is conf/config.yaml (see README: Configuration).
"""

# Commands that live beside their subsystem. Each module defines COMMAND (the subcommand's name) and
# add_parser(subparsers) -> handler(args) -> exit code; it must import nothing heavy at module level.
COMMAND_MODULES: tuple[str, ...] = (
    "lowbit.quant.quantize_cli",
    "lowbit.quant.dequantize_cli",
    "lowbit.tasks.ruler.cli",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lowbit", description="Benchmark low-bit LLMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    eval_parser = commands.add_parser("eval", help="evaluate a model on a benchmark", epilog=EVAL_EPILOG,
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
    eval_parser.add_argument("overrides", nargs="*", help="Hydra-style key=value overrides")
    eval_parser.add_argument("--dry-run", action="store_true", help="print the resolved config and first prompt")
    eval_parser.add_argument("--list", action="store_true", help="list benchmarks, models and predictors")

    score_parser = commands.add_parser("score", help="re-score a run directory without a model")
    score_parser.add_argument("-c", "--run-dir", required=True, help="run directory (holds predictions.jsonl)")
    score_parser.add_argument("--task", help="benchmark name, for run directories without config.yaml")
    score_parser.add_argument("--check-truncation", action="store_true",
                              help="report prompt+completion lengths and how many hit the limit")
    score_parser.add_argument("overrides", nargs="*", help="dataset.* scoring options, e.g. dataset.answer_key=ok_only")

    compare_parser = commands.add_parser("compare", help="compare precisions sample by sample against a baseline")
    compare_parser.add_argument("runs", nargs="+",
                                help="run dirs or globs; may include baseline=<precision|run dir> margin=<points>")
    compare_parser.add_argument("--baseline", help="precision label or run directory (default: bf16)")
    compare_parser.add_argument("--margin", type=float, help="non-inferiority margin in points (default 1.0)")
    compare_parser.add_argument("--out", help="directory for comparison.md / .csv / .json / .html (default: all four)")
    compare_parser.add_argument("--format", dest="formats", action="append",
                                choices=["markdown", "csv", "json", "html"],
                                help="write only this format to --out (repeatable); html: a self-contained report "
                                "with plots")

    commands.add_parser("demo", help="run an offline end-to-end evaluation on a tiny random model")

    handlers = {"eval": _eval, "score": _score, "compare": _compare, "demo": _demo}
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        handlers[module.COMMAND] = module.add_parser(commands)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return handlers[args.command](args)
    except UsageError as e:
        print(f"lowbit: error: {e}", file=sys.stderr)
        return 2


def _eval(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    from lowbit.config import resolve_eval

    cfg = resolve_eval(args.overrides)
    if args.dry_run:
        import yaml

        first = cfg.task.load(cfg.resolved["data_dir"])[0]
        print(yaml.safe_dump(cfg.resolved, sort_keys=False, allow_unicode=True))
        print(f"# first sample: {first.id}\n" + json.dumps(first.messages, indent=2, ensure_ascii=False))
        return 0
    from lowbit.run import evaluate

    run = evaluate(cfg)
    _print_summary(run.path)
    return 0


def _list() -> int:
    from lowbit.config import group_choices
    from lowbit.tasks import task_names

    print("benchmarks (eval_dataset=):", ", ".join(task_names()))
    print("models (model=):", ", ".join(group_choices("model")))
    print("predictors (predictor=):", ", ".join(group_choices("predictor")))
    return 0


def _score(args: argparse.Namespace) -> int:
    from lowbit.run import RunDir, score_run
    from lowbit.tasks import make_task
    from lowbit.truncation import format_report, truncation_report

    run = RunDir(args.run_dir)
    if not run.file("predictions.jsonl").exists():
        raise UsageError(f"{run.path} has no predictions.jsonl: give the output_dir of a `lowbit eval` run")
    config = run.config() or {}
    task_name = args.task or config.get("eval_dataset")
    if not task_name:
        raise UsageError(f"{run.path} has no config.yaml: name the benchmark with --task (e.g. --task mmlu-redux)")
    options = dict(config.get("dataset") or {}) if task_name == config.get("eval_dataset") else {}
    options.update(_dataset_overrides(args.overrides))
    previous = (run.metrics() or {}).get("task_version")
    metrics = score_run(run, make_task(task_name, options))
    if previous is not None and previous != metrics["task_version"]:
        print(f"note: the {task_name} scorer changed since this run was last scored "
              f"(version {previous} -> {metrics['task_version']}); metrics.json now holds the new scores")
    if args.check_truncation:
        limit = (config.get("sampling") or {}).get("max_sequence_length")
        print(format_report(truncation_report(run.predictions(), limit)))
    _print_summary(run.path, metrics)
    return 0


def _dataset_overrides(overrides: list[str]) -> dict[str, object]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise UsageError(f"cannot parse overrides: {str(e).splitlines()[0]}") from e
    options = {}
    for override in parsed:
        key = override.key_or_group
        if not key.startswith("dataset."):
            raise UsageError(f"lowbit score takes only dataset.* scoring options, got '{key}'")
        options[key.removeprefix("dataset.")] = override.value()
    return options


def _print_summary(run_dir: Path, metrics: dict | None = None) -> None:
    if metrics is None:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    name = metrics.get("headline", "accuracy")
    headline = metrics["metrics"].get(name)
    if headline and headline["value"] is not None:
        print(f"{metrics['task']}: {name} {100 * headline['value']:.2f}% "
              f"(95% CI {100 * headline['ci_low']:.2f}-{100 * headline['ci_high']:.2f}, n={headline['n']})")
    print(f"run directory: {run_dir}")


def _compare(args: argparse.Namespace) -> int:
    from lowbit.report import compare_main

    return compare_main(args.runs, args.baseline, args.margin, args.out, args.formats)


def _demo(args: argparse.Namespace) -> int:
    from lowbit.demo import run_demo

    run_demo()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
