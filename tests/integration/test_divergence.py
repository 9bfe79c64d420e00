"""`lowbit divergence` end to end on tiny Qwen3 models: identical models, emulated formats ordered by their
error sizes, the stored reference against the exact figure, a baseline run's completions through the command
line, and bad input (one line, nothing written)."""

import re

import pytest
import torch
from support import read_jsonl, run_lowbit, write_mmlu_redux

from lowbit.divergence.runner import DivergenceRequest, run_divergence
from lowbit.errors import UsageError
from lowbit.rundir import RunDir

pytestmark = pytest.mark.slow
SENTENCES = ["The derivative of x squared is two x, so the slope at three is six.",
             "Let n be the number of integers between 1 and 100 that are divisible by 7; then n = 14.",
             "We write the sum as a telescoping series and cancel all terms except the first and the last."]


@pytest.fixture(scope="module")
def peaked_model(tmp_path_factory):
    """A tiny Qwen3 whose next-token distributions are peaked (final norm scaled up), as a trained model's are;
    a random model's near-uniform ones hide format differences and make any top-k reference uninformative."""
    from transformers import AutoModelForCausalLM

    from lowbit.testing.tiny import build_tiny_qwen3

    path = build_tiny_qwen3(tmp_path_factory.mktemp("peaked"), seed=3)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.model.norm.weight.mul_(12.0)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def three_bit_model(peaked_model, tmp_path_factory):
    """The peaked model with every decoder Linear weight rounded to 3-bit integers per output channel."""
    import shutil

    from transformers import AutoModelForCausalLM

    path = tmp_path_factory.mktemp("three-bit")
    shutil.copytree(peaked_model, path, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
                scale = module.weight.abs().amax(dim=1, keepdim=True) / 3
                module.weight.copy_((module.weight / scale).round().clamp(-4, 3) * scale)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(" ".join(SENTENCES * 12))
    return path


def divergence(model, corpus, out, **options):
    request = DivergenceRequest(baseline=str(model), output_dir=str(out), source="corpus", corpus=str(corpus),
                                chunk_tokens=64, batch_tokens=256, **options)
    return RunDir(run_divergence(request)).metrics()


def test_identical_models_give_zero_kl_and_full_agreement(peaked_model, corpus, tmp_path):
    metrics = divergence(peaked_model, corpus, tmp_path / "same")
    assert metrics.metrics["kl_mean"]["value"] == 0 and metrics.metrics["kl_max"] == 0
    assert metrics.metrics["same_top_rate"]["value"] == 1 and metrics.metrics["ppl_ratio"]["value"] == 1
    lines = RunDir(tmp_path / "same").divergence_lines()
    assert len(lines) == metrics.metrics["sequences"] > 1 and all(line["tokens"] == 63 for line in lines)


def test_formats_order_as_their_error_sizes(peaked_model, three_bit_model, corpus, tmp_path):
    kl = {name: divergence(peaked_model, corpus, tmp_path / name, emulation={"weight_quant": name}).metrics
          for name in ("int8", "fp8", "mxfp4")}
    kl["3bit"] = divergence(peaked_model, corpus, tmp_path / "3bit", candidate=str(three_bit_model)).metrics
    mean = {name: m["kl_mean"]["value"] for name, m in kl.items()}
    assert 0 < max(mean["int8"], mean["fp8"]) < mean["mxfp4"] < mean["3bit"], mean
    assert kl["int8"]["same_top_rate"]["value"] >= kl["3bit"]["same_top_rate"]["value"]


def test_a_compressed_tensors_candidate_runs_decompressed(peaked_model, corpus, tmp_path):
    """A quantized checkpoint's weights are decompressed on its first whole-model forward pass; divergence runs
    the decoder alone, so its candidate is decompressed as it loads."""
    from lowbit.quant.checkpoint import QuantizeRequest, quantize_checkpoint

    quantize_checkpoint(QuantizeRequest(model=str(peaked_model), out=tmp_path / "int8", scheme="int8"))
    metrics = divergence(peaked_model, corpus, tmp_path / "int8-divergence", candidate=str(tmp_path / "int8"))
    assert 0 < metrics.metrics["kl_mean"]["value"] < 0.05 and metrics.metrics["same_top_rate"]["value"] > 0.9


def test_stored_reference_agrees_with_exact_within_its_bound(peaked_model, corpus, tmp_path):
    exact = divergence(peaked_model, corpus, tmp_path / "exact", emulation={"weight_quant": "mxfp4"})
    stored = divergence(peaked_model, corpus, tmp_path / "stored", emulation={"weight_quant": "mxfp4"},
                        reference="stored", top_k=16, reference_dir=str(tmp_path / "ref"))
    gap = exact.metrics["kl_mean"]["value"] - stored.metrics["kl_mean"]["value"]
    assert -1e-6 <= gap <= stored.metrics["kl_error_bound_mean"] + 1e-6
    for name in ("same_top_rate", "ppl_ratio", "top_prob_change_rms"):
        assert stored.metrics[name]["value"] == pytest.approx(exact.metrics[name]["value"], rel=1e-4, abs=1e-6)
    assert stored.extra["divergence"]["reference"]["reused"] is False
    again = divergence(peaked_model, corpus, tmp_path / "stored-int8", emulation={"weight_quant": "int8"},
                       reference="stored", top_k=16, reference_dir=str(tmp_path / "ref"))
    assert again.extra["divergence"]["reference"]["reused"] is True
    assert len(list((tmp_path / "ref").glob("divergence_reference-*.safetensors"))) == 1


def test_a_baseline_runs_completions_through_the_command_line(peaked_model, tmp_path):
    data = write_mmlu_redux(tmp_path / "mmlu", ["anatomy"], 3)
    run = tmp_path / "bf16"
    result = run_lowbit("eval", "model=qwen3_4B", f"model_name={peaked_model}", "eval_dataset=mmlu-redux",
                        f"data_dir={data}", "dataset.subjects=[anatomy]", f"output_dir={run}", "predictor=transformers",
                        "predictor_conf.show_progress=false", "sampling.max_sequence_length=160",
                        "predictor_conf.prompt_overflow=left_truncate", "predictor_conf.overflow_reserve_tokens=24",
                        "sampling.do_sample=false")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "div"
    result = run_lowbit("divergence", f"baseline={run}", "predictor_conf.act_quant=mxfp4", "precision=a4_emulated",
                        f"output_dir={out}")
    assert result.returncode == 0, result.stderr
    assert re.search(r"KL mean \d\.\d+ nats .* same top token \d+\.\d\d%", result.stdout)
    metrics = RunDir(out).metrics()
    assert metrics.task == "divergence" and metrics.metrics["kl_mean"]["value"] > 0
    assert RunDir(out).config().precision == "a4_emulated"
    lines = read_jsonl(out / "divergence.jsonl")
    completion_tokens = [p["completions"][0]["completion_tokens"] for p in read_jsonl(run / "predictions.jsonl")]
    assert len(lines) == 3 and sum(line["tokens"] for line in lines) <= sum(completion_tokens) + 3
    assert "kl_by_region" in metrics.groups or all("regions" not in line for line in lines)


def test_bad_input_is_one_line_and_writes_nothing(peaked_model, corpus, tmp_path):
    from transformers import AutoTokenizer

    other = tmp_path / "other-tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(peaked_model)
    tokenizer.add_tokens(["<extra_token>"])
    tokenizer.save_pretrained(other)
    (other / "config.json").write_text((peaked_model / "config.json").read_text())
    no_completions = tmp_path / "empty-run"
    no_completions.mkdir()
    (no_completions / "config.yaml").write_text(f"model_name: {peaked_model}\neval_dataset: mmlu-redux\n")
    cases = [
        (dict(candidate=str(other)), "has another tokenizer than the baseline"),
        (dict(chunk_tokens=100_000), "fewer than one chunk (chunk_tokens=100000): lower chunk_tokens"),
        (dict(baseline=str(no_completions), source="run"), "has no completion text to score"),
        (dict(source="run"), "source=run needs a baseline run directory"),
        (dict(emulation={"act_quant": "fp4"}, reference="stored"), "predictor_conf.act_quant 'fp4' is unknown"),
        (dict(backend="vllm", reference="exact"), "backend=vllm scores through the stored reference"),
        (dict(backend="vllm", emulation={"act_quant": "nvfp4"}), "predictor_conf.act_quant is fake-quant emulation"),
        (dict(engine={"gpu_memory_utilization": 0.3}), "gpu_memory_utilization is a vLLM engine option: add backend"),
        (dict(backend="vllm", top_k=8, candidate_top_k=4), "candidate_top_k=4 is below top_k=8"),
        (dict(backend="vllm", engine={"max_model_len": 32}), "max_model_len=32 is shorter than the longest sequence"),
        (dict(backend="mlx"), "backend 'mlx' unknown: choose transformers or vllm"),
    ]
    for options, message in cases:
        out = tmp_path / f"out-{len(message)}"
        request = {"baseline": str(peaked_model), "output_dir": str(out), "source": "corpus", "corpus": str(corpus),
                   "chunk_tokens": 64, **options}
        with pytest.raises(UsageError, match=re.escape(message)) as error:
            run_divergence(DivergenceRequest(**request))
        assert "\n" not in str(error.value) and not out.exists()
    result = run_lowbit("divergence", f"baseline={peaked_model}", f"corpus={corpus}", "chunk_tokens=100000",
                        f"output_dir={tmp_path / 'cli'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "fewer than one chunk" in result.stderr
    assert not (tmp_path / "cli").exists()
    result = run_lowbit("divergence", f"baseline={peaked_model}", f"corpus={corpus}", "backend=vllm",
                        "predictor_conf.weight_quant=mxfp4", f"output_dir={tmp_path / 'cli-vllm'}")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "predictor_conf.weight_quant is fake-quant emulation" in result.stderr
    assert not (tmp_path / "cli-vllm").exists()
