"""`lowbit` command line: eval | score | compare | quantize | dequantize | ruler prepare | demo.

    lowbit eval model=qwen3_4B eval_dataset=mmlu-redux output_dir=outputs/qwen3_4B_bf16_mmlu_redux [--dry-run]
    lowbit score -c outputs/qwen3_4B_bf16_mmlu_redux [--check-truncation] [dataset.answer_key=ok_only]
    lowbit compare 'outputs/qwen3_4B_*_mmlu_redux' baseline=bf16 margin=1.0 [out=reports/ format=html]
    lowbit demo

Options are key=value (Hydra's grammar, lowbit.overrides) in any order relative to the switches. Each command
is a `Command` (lowbit.command) registered in COMMANDS with one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lowbit.command import Command, Switch
from lowbit.errors import UsageError
from lowbit.registry import Registry

EVAL = Command(
    "eval", "evaluate a model on a benchmark", run="lowbit.cli:_eval",
    switches=(Switch(("--dry-run",), "print the resolved config and first prompt"),
              Switch(("--list",), "list benchmarks, models and predictors")),
    items_help="Hydra-style key=value overrides",
    options="""\
overrides use Hydra syntax (key=value), e.g.
  model=qwen3_4B | qwen3_1.7B | qwen3_30B_A3B_instruct | gpt_oss_20B
  model_name=<hub id or local dir>      precision=<label>        eval_dataset=mmlu-redux
  eval_dataset_config=<sampling block>  output_dir=<dir>         data_dir=<local dataset copy>
  subsample=N (stratified, the same ids for every precision)  limit=N (the first N)  debug=true  seed=S
  overwrite=true
  predictor=transformers  predictor_conf.batch_size=16  predictor_conf.dtype=bfloat16
  sampling.temperature=0  sampling.max_sequence_length=8192  dataset.subset=seed30
The full reference is conf/config.yaml and conf/predictor/*.yaml (see README: Configuration).
""",
    retired={"--config-name": "model=<config> (one composed config; quantizing is `lowbit quantize scheme=...`)"})

SCORE_OPTIONS: dict[str, object] = {"task": str}  # plus dataset.* scoring options, checked by the task
SCORE = Command(
    "score", "re-score a run directory without a model", run="lowbit.cli:_score",
    switches=(Switch(("-c", "--run-dir"), "run directory (holds predictions.jsonl)", metavar="RUN_DIR", required=True),
              Switch(("--check-truncation",), "report prompt+completion lengths and how many hit the limit")),
    items_help="task=<benchmark> and dataset.* scoring options, e.g. dataset.answer_key=ok_only",
    options="""\
options (key=value):
  dataset.<key>=<value>   the benchmark's scoring options, e.g. dataset.answer_key=ok_only
  task=<benchmark>        for run directories without config.yaml, e.g. task=mmlu-redux
""",
    retired={"--task": "task=<benchmark>"})

COMPARE = Command(
    "compare", "compare precisions sample by sample against a baseline", run="lowbit.cli:_compare",
    items_help="run directories or globs, and key=value options", items_metavar="RUN|key=value",
    options="""\
options (key=value, anywhere among the runs):
  baseline=<precision|run dir>   the reference runs (default bf16)
  margin=<points>                non-inferiority margin in percentage points (default 1.0)
  out=<dir>                      write comparison.md / .csv / .json / .html there
  format=<fmt> | format=[a,b]    only these files: markdown, csv, json, html (a self-contained report with plots)
""",
    retired={"--baseline": "baseline=<precision or run dir>", "--margin": "margin=<points>",
             "--out": "out=<dir>", "--format": "format=<markdown|csv|json|html>"})

DEMO = Command("demo", "quantize the trained model organism into every scheme and compare the precisions offline",
               run="lowbit.cli:_demo")

# Every subcommand, in the order `lowbit --help` lists them. Each target is a light `Command` declaration; its
# handler is imported only when it runs.
COMMANDS = Registry("command", {
    "eval": "lowbit.cli:EVAL",
    "score": "lowbit.cli:SCORE",
    "compare": "lowbit.cli:COMPARE",
    "quantize": "lowbit.quant.quantize_cli:COMMAND",
    "dequantize": "lowbit.quant.dequantize_cli:COMMAND",
    "ruler": "lowbit.tasks.ruler.cli:COMMAND",
    "sweep": "lowbit.sweep.cli:COMMAND",
    "divergence": "lowbit.divergence.cli:COMMAND",
    "demo": "lowbit.cli:DEMO",
})


def main(argv: list[str] | None = None) -> int:
    from lowbit.registry import import_target

    parser = argparse.ArgumentParser(prog="lowbit", description="Benchmark low-bit LLMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subcommands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS.entries:
        COMMANDS.get(name).add_to(subcommands)

    args, extra = parser.parse_known_args(argv)
    command: Command = args.command_spec
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        command.take_extra(args, extra)
        return import_target(command.run)(args)
    except UsageError as e:
        print(f"lowbit: error: {e}", file=sys.stderr)
        return 2


def _eval(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    from lowbit.config import resolve_eval, split_eval_datasets

    configs = [resolve_eval(overrides) for overrides in split_eval_datasets(args.overrides)]  # all checked first
    if args.dry_run:
        import yaml

        for cfg in configs:
            first = cfg.task.load(cfg.resolved["data_dir"])[0]
            print(yaml.safe_dump(cfg.resolved, sort_keys=False, allow_unicode=True))
            print(f"# first sample: {first.id}\n" + json.dumps(first.messages, indent=2, ensure_ascii=False))
        return 0
    from lowbit.run import evaluate

    for cfg in configs:
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
    from lowbit.run import score_run
    from lowbit.rundir import CONFIG, METRICS, PREDICTIONS, RunDir
    from lowbit.tasks import make_task
    from lowbit.truncation import format_report, truncation_report

    task_option, dataset_options = _score_options(args.overrides)
    run = RunDir(args.run_dir)
    if not run.has_predictions():
        raise UsageError(f"{run.path} has no {PREDICTIONS}: give the output_dir of a `lowbit eval` run")
    config = run.config()
    recorded_task = config.task if config else None
    task_name = task_option or recorded_task
    if not task_name:
        raise UsageError(f"{run.path} has no {CONFIG}: name the benchmark with task= (e.g. task=mmlu-redux)")
    if recorded_task and task_name != recorded_task:
        raise UsageError(f"{run.path} is a {recorded_task} run: it cannot be scored as {task_name}; to evaluate "
                         f"{task_name}, make a new run (lowbit eval eval_dataset={task_name} output_dir=<new dir>)")
    options = dict(config.dataset) if config else {}
    options.update(dataset_options)
    scored_before = run.metrics()
    previous = scored_before.task_version if scored_before else None
    version = score_run(run, make_task(task_name, options))["task_version"]
    if previous is not None and previous != version:
        print(f"note: the {task_name} scorer changed since this run was last scored "
              f"(version {previous} -> {version}); {METRICS} now holds the new scores")
    if args.check_truncation:
        limit = config.sampling.get("max_sequence_length") if config else None
        print(format_report(truncation_report(run.predictions(), limit)))
    _print_summary(run.path)
    return 0


def _score_options(items: list[str]) -> tuple[str | None, dict[str, object]]:
    """`task=` and the dataset.* scoring options (checked by the task) of `lowbit score`."""
    from lowbit.overrides import check_type, did_you_mean, parse

    task, dataset_options = None, {}
    for override in parse(items):
        if override.key.startswith("dataset."):
            dataset_options[override.key.removeprefix("dataset.")] = override.value
        elif override.key in SCORE_OPTIONS:
            task = check_type(override.key, override.value, SCORE_OPTIONS[override.key])
        else:
            raise UsageError(f"unknown score option '{override.key}'.{did_you_mean(override.key, SCORE_OPTIONS)} "
                             "lowbit score takes task=<benchmark> and dataset.* scoring options")
    return task, dataset_options


def _print_summary(run_dir: Path) -> None:
    from lowbit.rundir import RunDir

    metrics = RunDir(run_dir).metrics()
    headline = metrics.headline_estimate if metrics else None
    if headline is not None and headline.value is not None:
        print(f"{metrics.task}: {metrics.headline} {100 * headline.value:.2f}% "
              f"(95% CI {100 * headline.ci_low:.2f}-{100 * headline.ci_high:.2f}, n={headline.n})"
              + "".join(f"; {part}" for part in _summary_counts(metrics)))
    print(f"run directory: {run_dir}")


def _summary_counts(metrics) -> list[str]:
    """What the headline leaves out: answers that could not be parsed, samples excluded (and why), completions
    that hit the length limit; each only when there are any."""
    counts, parts = metrics.metrics, []
    if counts.get("parse_failures"):
        parts.append(f"{counts['parse_failures']} answer(s) could not be parsed")
    if counts.get("excluded"):
        reasons = ", ".join(f"{reason} {n}" for reason, n in (counts.get("excluded_by_reason") or {}).items())
        parts.append(f"{counts['excluded']} sample(s) excluded" + (f" ({reasons})" if reasons else ""))
    generation = metrics.generation
    cut = round((generation.get("finish_length_share") or 0) * (generation.get("completions") or 0))
    if cut:
        parts.append(f"{cut} of {generation['completions']} completion(s) hit the length limit")
    return parts


def _compare(args: argparse.Namespace) -> int:
    from lowbit.report import compare_main

    return compare_main(args.overrides)  # run paths and key=value options (lowbit.report.arguments)


def _demo(args: argparse.Namespace) -> int:
    from lowbit.demo import run_demo

    run_demo()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
