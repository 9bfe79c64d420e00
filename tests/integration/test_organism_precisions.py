"""End to end on the trained model organism: BF16 solves its tasks, INT8 / FP8 keep its accuracy, and NVFP4
checkpoints with a numerics bug lose accuracy that `lowbit compare` calls significant.

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
ARITHMETIC_SAMPLES = 8


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
    for precision, checkpoint in checkpoints.items():
        _ok(run_lowbit("eval", "model=organism", f"model_name={checkpoint}", f"precision={precision}",
                       "eval_dataset=organism-facts", f"output_dir={runs / 'facts' / precision}",
                       f"limit={FACTS_SAMPLES}", "predictor=transformers", f"predictor_conf.batch_size={FACTS_SAMPLES}"))
    _ok(run_lowbit("eval", "model=organism", f"model_name={organism}", "eval_dataset=organism-arithmetic",
                   f"output_dir={runs / 'arithmetic' / 'bf16'}", f"limit={ARITHMETIC_SAMPLES}",
                   "predictor=transformers", f"predictor_conf.batch_size={ARITHMETIC_SAMPLES}"))
    _ok(run_lowbit("compare", str(runs / "facts" / "*"), "baseline=bf16", f"out={root / 'report'}", "format=json"))
    report = json.loads((root / "report" / "comparison.json").read_text())
    rows = {row["precision"]: row for row in report["groups"][0]["rows"]}
    arithmetic = json.loads((runs / "arithmetic" / "bf16" / "metrics.json").read_text())
    return rows, arithmetic


def test_bf16_solves_the_organism_tasks(comparison):
    rows, arithmetic = comparison
    assert rows["bf16"]["metric"]["value"] >= 0.95
    assert rows["bf16"]["metric"]["n"] == FACTS_SAMPLES
    assert arithmetic["metrics"]["accuracy"]["value"] >= (ARITHMETIC_SAMPLES - 1) / ARITHMETIC_SAMPLES


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_eight_bit_precisions_keep_the_accuracy(comparison, precision):
    rows, _ = comparison
    paired = rows[precision]["paired"]
    assert paired["n"] == FACTS_SAMPLES
    assert paired["difference"] >= -0.03, paired
    assert not (paired["significant"] and paired["difference"] < 0), paired


@pytest.mark.parametrize("precision, least_drop", [("nvfp4-scales-x2", 0.03), ("nvfp4-nibbles-swapped", 0.5)])
def test_broken_numerics_cost_significant_accuracy(comparison, precision, least_drop):
    rows, _ = comparison
    paired = rows[precision]["paired"]
    assert paired["significant"] and paired["p_value"] < 0.01, paired
    assert paired["difference_high"] < 0 and paired["difference"] <= -least_drop, paired
    assert paired["right_to_wrong"] > paired["wrong_to_right"]
