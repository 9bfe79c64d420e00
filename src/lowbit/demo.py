"""`lowbit demo`: what each precision costs the model organism, measured offline on a CPU in a few minutes.

The organism (lowbit.organism) is a small Qwen3 trained to solve its tasks, so damaged weights show up as lost
accuracy. The demo quantizes it into each scheme with `lowbit quantize`, adds W4A4 (NVFP4 weights and
activations, emulated by the transformers predictor), evaluates every precision on the same held-out samples of
the organism's tasks with greedy decoding, and compares them with the BF16 parent with `lowbit compare`: paired
differences, McNemar's test, flips, and a self-contained HTML report.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lowbit.errors import UsageError

DEMO_ROOT = Path("outputs/demo")
SCHEMES = ("fp8", "int8", "mxfp8", "w4a16", "nvfp4", "mxfp4")
# Samples per task: the first N held-out ids, the same for every precision.
SAMPLES = {"organism-facts": 200, "organism-arithmetic": 40}
BATCH_SIZE = 200


@dataclass(frozen=True)
class Precision:
    label: str  # the precision recorded in run.json and shown by lowbit compare
    checkpoint: str  # the scheme's checkpoint folder under the demo root, or "" for the organism itself
    options: tuple[str, ...] = ()  # extra `lowbit eval` options


PRECISIONS = (
    Precision("bf16", ""),
    *(Precision(scheme, scheme) for scheme in SCHEMES),
    Precision("w4a4-nvfp4", "", ("predictor_conf.act_quant=nvfp4", "predictor_conf.weight_quant=nvfp4")),
)


def run_demo(root: Path = DEMO_ROOT, samples: dict[str, int] | None = None,
             precisions: tuple[Precision, ...] = PRECISIONS) -> Path:
    """Quantize, evaluate and compare; returns the report folder."""
    from lowbit.organism import model_dir

    organism = model_dir()
    samples = samples or SAMPLES
    root = Path(root)
    runs = root / "runs"
    if runs.exists():
        shutil.rmtree(runs)  # a fresh comparison every time: runs of an earlier demo may hold other samples
    for precision in precisions:
        checkpoint = organism
        if precision.checkpoint:
            checkpoint = root / "checkpoints" / precision.checkpoint
            if not (checkpoint / "config.json").is_file():
                _lowbit("quantize", f"model={organism}", f"scheme={precision.checkpoint}", f"out={checkpoint}",
                        "overwrite=true")
        for task, count in samples.items():
            print(f"\n== {precision.label}: {task} ({count} samples)", flush=True)
            _lowbit("eval", "model=organism", f"model_name={checkpoint}", f"precision={precision.label}",
                    f"eval_dataset={task}", f"output_dir={runs / task / precision.label}", f"limit={count}",
                    "predictor=transformers", f"predictor_conf.batch_size={BATCH_SIZE}", *precision.options)
    report = root / "report"
    print("\n== lowbit compare", flush=True)
    _lowbit("compare", *(str(runs / task / "*") for task in samples), "baseline=bf16", f"out={report}")
    print(f"\nHTML report: {report / 'comparison.html'}")
    print(f"the organism and its tasks: {organism / 'README.md'}")
    return report


def _lowbit(*argv: str) -> None:
    from lowbit.cli import main

    status = main(list(argv))
    if status != 0:
        raise UsageError(f"`lowbit {' '.join(argv)}` failed with exit status {status}")
