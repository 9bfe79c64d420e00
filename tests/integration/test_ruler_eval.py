"""RULER end to end on a tiny random Qwen3: `lowbit eval` from a prepared folder and from an on-the-fly cache,
the dataset fingerprint in run.json, the prompt lengths the model reads, and a resume onto other data or data
fitted for another prompt profile refused."""

import json

import pytest

from support import read_jsonl, run_lowbit
from lowbit.tasks.ruler.cli import parse_options, prepare
from lowbit.tasks.ruler.templates import TOKENS_TO_GENERATE

pytestmark = pytest.mark.slow

SAMPLES = 3


def eval_args(model, output_dir, task, *extra):
    return ["eval", "model=qwen3_4B", f"model_name={model}", "precision=bf16", f"eval_dataset={task}",
            f"output_dir={output_dir}", "predictor=transformers",
            "predictor_conf.batch_size=4", "predictor_conf.show_progress=false", "sampling.max_sequence_length=1024",
            *extra]


@pytest.fixture(scope="module")
def prepared(tiny_model_stopping, tmp_path_factory):
    folders = {}
    for seed in (42, 43):
        out = tmp_path_factory.mktemp("ruler") / f"vt-fwe-1k-{seed}"
        assert prepare(parse_options([f"tokenizer={tiny_model_stopping}", "max_seq_length=1k",
                                      f"num_samples={SAMPLES}", f"seed={seed}", f"out={out}", "tasks=vt,fwe"])) == 0
        folders[seed] = out
    return folders


def test_eval_from_a_prepared_folder_records_its_hash(tiny_model_stopping, prepared, tmp_path):
    output_dir = tmp_path / "vt"
    result = run_lowbit(*eval_args(tiny_model_stopping, output_dir, "ruler-vt-1k", f"data_dir={prepared[42]}"))
    assert result.returncode == 0, result.stderr
    assert "ruler-vt-1k: score" in result.stdout
    manifest = json.loads((prepared[42] / "manifest.json").read_text())
    dataset = json.loads((output_dir / "run.json").read_text())["task"]["dataset"]
    assert dataset["files"] == {"vt": manifest["tasks"]["vt"]["sha256"]}
    assert dataset["manifest_content_hash"] == manifest["content_hash"] and dataset["source"] == "prepared"
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["headline"] == "score" and metrics["metrics"]["score"]["n"] == SAMPLES
    assert 0 <= metrics["metrics"]["nulls"] <= SAMPLES and metrics["metrics"]["samples"] == SAMPLES
    rows = read_jsonl(output_dir / "scores.jsonl")
    assert sorted(r["id"] for r in rows) == [f"vt/{i}" for i in range(SAMPLES)]
    assert all(len(r["gold"]) == 5 and 0 <= r["score"] <= 1 for r in rows)
    predictions = read_jsonl(output_dir / "predictions.jsonl")
    # Qwen3's reference messages put a system message before each prompt, and the fitting counted it: the model
    # read exactly the recorded length, which leaves the whole answer budget
    assert [m["role"] for m in predictions[0]["messages"]] == ["system", "user"]
    budget = 1024 - TOKENS_TO_GENERATE["vt"]
    assert all(p["completions"][0]["prompt_tokens"] == p["item"]["length"] <= budget for p in predictions)
    assert dataset["prompt"]["profile"] == "reference" and dataset["prompt"]["family"] == "qwen3"

    lowbit_dir = tmp_path / "vt-lowbit"
    refused = run_lowbit(*eval_args(tiny_model_stopping, lowbit_dir, "ruler-vt-1k", f"data_dir={prepared[42]}",
                                    "dataset.prompt=lowbit"))
    assert refused.returncode == 2 and "fitted for dataset.prompt=reference" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not lowbit_dir.exists()

    other = run_lowbit(*eval_args(tiny_model_stopping, output_dir, "ruler-vt-1k", f"data_dir={prepared[43]}"))
    assert other.returncode == 2 and "dataset fingerprint differs" in other.stderr, other.stderr


def test_eval_without_data_generates_into_the_cache_with_the_models_tokenizer(tiny_model_stopping, prepared,
                                                                                tmp_path):
    cache, output_dir = tmp_path / "cache", tmp_path / "fwe"
    result = run_lowbit(*eval_args(tiny_model_stopping, output_dir, "ruler-fwe-1k", f"dataset.num_samples={SAMPLES}",
                                   f"dataset.cache_dir={cache}"))
    assert result.returncode == 0, result.stderr
    [folder] = list(cache.iterdir())
    assert folder.name.endswith(f"-1024-42-{SAMPLES}")
    # the same tokenizer, template arguments and seed give the same prompts as `lowbit ruler prepare`
    prepared_manifest = json.loads((prepared[42] / "manifest.json").read_text())
    dataset = json.loads((output_dir / "run.json").read_text())["task"]["dataset"]
    assert dataset["source"] == "generated"
    assert dataset["files"] == {"fwe": prepared_manifest["tasks"]["fwe"]["sha256"]}
