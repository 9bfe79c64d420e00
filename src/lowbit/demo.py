"""`lowbit demo`: an offline end-to-end evaluation on a tiny random-weight Qwen3 model.

It builds the model (with the real Qwen3 tokenizer when the shared data has it), evaluates it on a debug
subset of MMLU-Redux from the shared data, re-scores the run, and shows what the run directory holds. The
model is random, so its accuracy is chance level or below: the demo shows the machinery, not a result.
"""

from __future__ import annotations

from pathlib import Path

from lowbit.errors import UsageError
from lowbit.testing.data import shared_path

DEMO_ROOT = Path("outputs/demo")


def run_demo() -> Path:
    from lowbit.config import resolve_eval
    from lowbit.run import evaluate, score_run
    from lowbit.testing.tiny import build_tiny_qwen3

    data_dir = shared_path("mmlu_redux")
    if data_dir is None:
        raise UsageError("the demo needs the MMLU-Redux files of shared/data/mmlu_redux (beside the checkout, "
                         "or set LOWBIT_SHARED_DATA=<shared/data>)")
    model_dir = DEMO_ROOT / "tiny-qwen3"
    if not (model_dir / "model.safetensors").exists():
        print(f"building a tiny random Qwen3 model in {model_dir}")
        build_tiny_qwen3(model_dir, eos_logit=10.0)
    output_dir = DEMO_ROOT / "tiny-qwen3_bf16_mmlu-redux"
    cfg = resolve_eval([
        "model=qwen3_4B", f"model_name={model_dir}", "precision=bf16", "eval_dataset=mmlu-redux",
        f"data_dir={data_dir}", f"output_dir={output_dir}", "debug=true", "overwrite=true",
        "predictor=transformers", "predictor_conf.batch_size=10",
        # The random model rambles; sample from its full distribution and keep completions short.
        "sampling.temperature=1.0", "sampling.top_p=1.0", "sampling.top_k=-1", "sampling.max_sequence_length=512",
    ])
    run = evaluate(cfg)
    rescored = score_run(run, cfg.task)
    print(f"\nrun directory: {run.path}")
    for name, size, what in run.listing():
        print(f"  {name:<18} {size:>9,} bytes  {what}")
    first = run.predictions()[0]
    completion = first.completions[0]
    print(f"\nfirst prediction ({first.id}): finish_reason={completion.finish_reason}, "
          f"{completion.completion_tokens} tokens, answer={completion.answer[:60]!r}")
    accuracy = rescored["metrics"]["accuracy"]
    print(f"accuracy {100 * accuracy['value']:.1f}% on {accuracy['n']} samples "
          f"(95% CI {100 * accuracy['ci_low']:.1f}-{100 * accuracy['ci_high']:.1f}); "
          f"parse failures: {rescored['metrics']['parse_failures']} (a random model names no letter)")
    print(f"re-score it without a model: lowbit score -c {run.path} --check-truncation")
    return run.path

