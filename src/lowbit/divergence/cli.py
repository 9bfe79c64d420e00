"""`lowbit divergence`: how far a candidate's next-token distributions are from its baseline's.

    lowbit divergence baseline=outputs/qwen3_4B_bf16_math500 candidate=ckpts/qwen3-4b-nvfp4 precision=nvfp4 \
        output_dir=outputs/qwen3_4B_nvfp4_divergence
    lowbit divergence baseline=Qwen/Qwen3-4B predictor_conf.act_quant=nvfp4 predictor_conf.weight_quant=nvfp4 \
        precision=w4a4_nvfp4_emulated source=corpus corpus=math500 data_dir=shared/data/math500 output_dir=...
"""

from __future__ import annotations

import argparse
import typing

from lowbit.command import Command
from lowbit.predictors.options import VLLMOptions
from lowbit.predictors.vllm import ENGINE_ARGS

# the candidate's fake-quant options, spelled as `lowbit eval predictor=transformers` spells them
EMULATION = {f"predictor_conf.{name}": (name, annotation) for name, annotation in
             (("act_quant", str), ("weight_quant", str), ("quant_targets", list), ("quant_ignore", list))}
# backend=vllm: the vLLM predictor's engine options, spelled as `lowbit eval predictor=vllm` spells them (the
# engine's dtype is `dtype`, as for the transformers backend)
ENGINE = {f"predictor_conf.{name}": (name, typing.get_type_hints(VLLMOptions)[name])
          for name in ENGINE_ARGS if name != "dtype"}
OPTIONS: dict[str, object] = {
    "baseline": str, "candidate": str, "output_dir": str, "precision": str, "source": str, "corpus": str,
    "data_dir": str, "chunk_tokens": int, "limit": int, "backend": str, "reference": str, "top_k": int,
    "candidate_top_k": int, "reference_dir": str, "batch_tokens": int, "dtype": str, "device_map": str,
    "overwrite": bool,
    **{key: annotation for key, (_, annotation) in (EMULATION | ENGINE).items()},
}
COMMAND = Command(
    "divergence", "token-level fidelity of a candidate against its baseline (KL, top-token agreement, PPL ratio)",
    run="lowbit.divergence.cli:run",
    options="""\
options (key=value):
  baseline=<run dir | model>     a BF16 lowbit eval run (its model and completions) or a model dir / hub id
  candidate=<model>              quantized checkpoint (default: the baseline's model, for emulation alone)
  predictor_conf.act_quant=nvfp4 predictor_conf.weight_quant=nvfp4   emulate the candidate's precision
  precision=<label>              the candidate's label, for lowbit compare    output_dir=<dir>  overwrite=true
  source=run | corpus            the run's prompts + completions, or chunks of text (default: run for a run dir)
  corpus=math500 | <file>        MATH-500 solutions (data_dir=<folder with test.jsonl>) or a .txt / .jsonl file
  chunk_tokens=512  limit=N      corpus chunk length; at most N sequences
  reference=exact | stored       both models at once, or the baseline's stored top-k (top_k=32, reference_dir=)
  batch_tokens=16384  dtype=auto  device_map=auto
  backend=transformers | vllm    vllm: prompt log-probabilities, stored reference, the candidate's top
                                 candidate_top_k (default 2 x top_k); engine options as predictor=vllm's:
                                 predictor_conf.gpu_memory_utilization=0.9 predictor_conf.tensor_parallel_size=1 ...
See docs/divergence.md.
""")


def run(args: argparse.Namespace) -> int:
    from lowbit.divergence.runner import DivergenceRequest, run_divergence
    from lowbit.overrides import parse_options, require
    from lowbit.rundir import RunDir

    values = parse_options(args.overrides, OPTIONS, COMMAND.name)
    require(values, "baseline", "baseline=outputs/qwen3_4B_bf16_math500")
    require(values, "output_dir", "output_dir=outputs/qwen3_4B_nvfp4_divergence")
    emulation = {name: values.pop(key) for key, (name, _) in EMULATION.items() if key in values}
    engine = {name: values.pop(key) for key, (name, _) in ENGINE.items() if key in values}
    path = run_divergence(DivergenceRequest(**values, emulation=emulation, engine=engine))
    metrics = RunDir(path).metrics()
    kl, same, ratio = (metrics.estimate(name) for name in ("kl_mean", "same_top_rate", "ppl_ratio"))
    print(f"KL mean {kl.value:.5f} nats (95% CI {kl.ci_low:.5f}-{kl.ci_high:.5f}), "
          f"p99 {metrics.metrics['kl_p99']:.4f}; same top token {100 * same.value:.2f}%; PPL ratio {ratio.value:.4f} "
          f"over {metrics.metrics['tokens']} tokens in {metrics.metrics['sequences']} sequences")
    print(f"run directory: {path}")
    return 0
