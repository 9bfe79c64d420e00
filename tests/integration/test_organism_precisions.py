"""End to end on the trained model organism: BF16 solves its tasks, INT8 / FP8 keep its accuracy on the facts,
and NVFP4 checkpoints with a numerics bug lose arithmetic accuracy that `lowbit compare` calls significant (the
memorised facts survive even a doubled scale; the column-by-column arithmetic does not).

A random-weight model cannot catch such bugs (it scores at chance at every precision); the organism can. The bugs
are made in the test, on the checkpoint `lowbit quantize` wrote: every E4M3 block scale one exponent too high
(doubled), and the two 4-bit codes of every byte swapped (element 2i read from the high nibble).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from support import run_lowbit
from lowbit.organism import model_dir

pytestmark = pytest.mark.slow

FACTS_SAMPLES = 200
ARITHMETIC_SAMPLES = 10  # all 10 flipping gives McNemar p = 0.002


def scales_one_exponent_high(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
    if name.endswith(".weight_scale") and tensor.dtype == torch.float8_e4m3fn:
        return (tensor.float() * 2).clamp(max=448.0).to(torch.float8_e4m3fn)
    return None


def nibbles_swapped(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
    if name.endswith(".weight_packed") and tensor.dtype == torch.uint8:
        return (tensor >> 4) | (tensor << 4)
    return None


CORRUPTIONS = {"nvfp4-scales-x2": scales_one_exponent_high, "nvfp4-nibbles-swapped": nibbles_swapped}


def corrupt(checkpoint: Path, change) -> int:
    """Rewrite the checkpoint's tensors through `change` (None: keep); returns how many tensors changed."""
    changed = 0
    for shard in checkpoint.glob("*.safetensors"):
        tensors = load_file(shard)
        for name, tensor in tensors.items():
            new = change(name, tensor)
            if new is not None:
                tensors[name] = new
                changed += 1
        save_file(tensors, shard, metadata={"format": "pt"})
    return changed


def _ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("organism")
    organism = model_dir()
    checkpoints = {"bf16": organism}
    for scheme in ("int8", "fp8", "nvfp4"):
        checkpoints[scheme] = root / scheme
        _ok(run_lowbit("quantize", f"model={organism}", f"scheme={scheme}", f"out={root / scheme}"))
    for label, change in CORRUPTIONS.items():
        shutil.copytree(root / "nvfp4", root / label)
        assert corrupt(root / label, change) == 42  # 6 layers x 7 Linear modules
        checkpoints[label] = root / label
    runs = root / "runs"
    tasks = {"facts": (("bf16", "int8", "fp8"), FACTS_SAMPLES),
             "arithmetic": (("bf16", *CORRUPTIONS), ARITHMETIC_SAMPLES)}
    rows = {}
    for task, (precisions, samples) in tasks.items():
        for precision in precisions:
            _ok(run_lowbit("eval", "model=organism", f"model_name={checkpoints[precision]}", f"precision={precision}",
                           f"eval_dataset=organism-{task}", f"output_dir={runs / task / precision}", f"limit={samples}",
                           "predictor=transformers", f"predictor_conf.batch_size={samples}"))
        _ok(run_lowbit("compare", str(runs / task / "*"), "baseline=bf16", f"out={root / task}", "format=json"))
        report = json.loads((root / task / "comparison.json").read_text())
        rows[task] = {row["precision"]: row for row in report["groups"][0]["rows"]}
    return rows


def test_bf16_solves_the_organism_tasks(comparison):
    facts, arithmetic = comparison["facts"]["bf16"]["metric"], comparison["arithmetic"]["bf16"]["metric"]
    assert facts["value"] >= 0.95 and facts["n"] == FACTS_SAMPLES
    assert arithmetic["n"] == ARITHMETIC_SAMPLES
    assert arithmetic["value"] >= (ARITHMETIC_SAMPLES - 1) / ARITHMETIC_SAMPLES


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_eight_bit_precisions_keep_the_accuracy(comparison, precision):
    paired = comparison["facts"][precision]["paired"]
    assert paired["n"] == FACTS_SAMPLES
    assert paired["difference"] >= -0.03, paired
    assert not (paired["significant"] and paired["difference"] < 0), paired


@pytest.mark.parametrize("precision", list(CORRUPTIONS))
def test_broken_numerics_cost_significant_accuracy(comparison, precision):
    paired = comparison["arithmetic"][precision]["paired"]
    assert paired["significant"] and paired["p_value"] < 0.01, paired
    assert paired["difference_high"] < 0 and paired["difference"] <= -0.5, paired
    assert paired["right_to_wrong"] > paired["wrong_to_right"]
