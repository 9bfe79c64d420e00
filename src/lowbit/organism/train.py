"""Train the organism from a seed: `python -m lowbit.organism.train out=<dir>` runs the shipped recipe.

The recipe (lowbit.organism.recipe.RECIPE) trains random weights on the organism's tasks, one fixed-shape batch
of each per optimizer step, and writes the checkpoint to `<out>`: the bf16 weights (model.safetensors), config,
generation config, tokenizer and manifest.json (seed, steps, learning rate, warmup, batch shapes, final losses
and held-out accuracy per task, the weights' SHA-256, versions, device and training time, and under "command"
the command line that reproduces it). With `init=`, training continues from a checkpoint this command wrote
(its bf16 weights and tokenizer, a fresh optimizer) and its manifest is nested under "init". Uses a CUDA GPU
when there is one (bf16 autocast, torch.compile: minutes on an H200), else the CPU (far slower: use it for a
few steps only).

Options (key=value; every one but out has a default that reproduces the shipped recipe):
  out            the folder the organism is written to (required)
  init           a checkpoint written by this command to continue from, instead of random weights; its
                 tokenizer is kept and its manifest nested as "init"
  seed           added to the recipe's seed (default 0: the recipe's)
  steps          optimizer steps (default: the recipe's)
  eval_samples   held-out samples per task for the manifest (500; 0 leaves the evaluation out)
  workers        data workers per task (7); each worker draws its own stream, so this changes the batches
  compile        torch.compile on a GPU (true)
  time_budget_s  when set, the first steps are timed and the steps lowered so the training fits the budget; the
                 manifest's command records the steps run, so rerunning it needs no budget
  scale          multiplies every batch size (1 on a GPU)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from lowbit.errors import UsageError
from lowbit.organism.recipe import RECIPE, TASKS

PROGRAM = "python -m lowbit.organism.train"
OPTIONS = {"out": str, "init": str, "seed": int, "steps": int, "eval_samples": int, "workers": int, "compile": bool,
           "time_budget_s": float, "scale": float}
DEFAULTS = {"init": "", "seed": 0, "steps": RECIPE.steps, "eval_samples": 500, "workers": 7, "compile": True,
            "time_budget_s": 0.0, "scale": 1.0}
# The options a manifest's command records (time_budget_s is not: the steps it allowed are recorded instead).
RECORDED = ("out", "init", "seed", "steps", "eval_samples", "workers", "compile", "scale")
CALIBRATION_STEPS = 30  # steps timed (after the first, which compiles) to fit the run into time_budget_s


def parse(argv: list[str]) -> dict:
    """The run's options from key=value items."""
    from lowbit.overrides import parse_options, require

    options = {**DEFAULTS, **parse_options(argv, OPTIONS, command="organism.train")}
    require(options, "out", "out=organism")
    for key, low in (("steps", 1), ("eval_samples", 0), ("workers", 0)):
        if options[key] < low:
            raise UsageError(f"{key}={options[key]}: must be at least {low}")
    if options["scale"] <= 0 or options["time_budget_s"] < 0:
        raise UsageError("scale must be above 0 and time_budget_s at least 0 (0: no budget)")
    init = Path(options["init"]) if options["init"] else None
    if init and not ((init / "manifest.json").is_file() and (init / "model.safetensors").is_file()):
        raise UsageError(f"init={init}: not a checkpoint written by this command (it needs manifest.json and "
                         "model.safetensors); give the out= folder of an earlier run")
    return options


def command(options: dict, steps: int) -> str:
    """The command line that runs `options` for `steps` steps."""
    values = {**options, "steps": steps}
    items = [f"{key}={_text(values[key])}" for key in RECORDED if key != "init" or values["init"]]
    return " ".join([PROGRAM, *map(shlex.quote, items)])


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def lr_at(step: int, steps: int) -> float:
    if step < RECIPE.warmup:
        return RECIPE.lr * (step + 1) / RECIPE.warmup
    progress = (step - RECIPE.warmup) / max(1, steps - RECIPE.warmup)
    return RECIPE.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def steps_within_budget(steps: int, budget_s: float, per_step: float, elapsed: float, step: int) -> int:
    """The planned `steps`, lowered so the training fits `budget_s`, from the seconds per step measured after
    `step` steps and `elapsed` seconds (setup included); never below the steps already run."""
    available = budget_s - (elapsed - per_step * (step + 1))  # the budget less setup time
    if per_step * steps <= available:
        return steps
    return max(step + 1, int(available / per_step))


def train(options: dict) -> dict:
    """Train as `options` (as `parse` returns them) say and write the checkpoint; its manifest."""
    import torch
    import transformers
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from lowbit.organism.batches import TaskBatches, batch_stream
    from lowbit.organism.heldout import held_out_accuracy
    from lowbit.organism.model import generation_config, qwen3_config
    from lowbit.organism.tokenizer import build_tokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    init, steps = options["init"], options["steps"]
    seed = RECIPE.seed + options["seed"]
    print(f"{steps} steps, seed {seed}" + (f", from {init}" if init else ""), flush=True)
    torch.set_float32_matmul_precision("high")
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    # BPE training is not reproducible across `tokenizers` versions: continued training keeps its tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(init) if init else build_tokenizer()
    if init:
        model = Qwen3ForCausalLM.from_pretrained(init, dtype=torch.float32).to(device)
    else:
        model = Qwen3ForCausalLM(qwen3_config(tokenizer)).to(device=device, dtype=torch.float32)
    model.config.use_cache = False
    forward = torch.compile(model, dynamic=False) if options["compile"] and device == "cuda" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=RECIPE.lr, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device == "cuda")
    specs = {name: TaskBatches(name, TASKS[name].generate, examples, length)
             for name, (examples, length) in RECIPE.batch_shapes(options["scale"]).items()}
    streams = {name: batch_stream(spec, tokenizer, seed, options["workers"]) for name, spec in specs.items()}
    losses = {name: [] for name in specs}
    step, timer = 0, None
    while step < steps:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps)
        for name, stream in streams.items():
            ids, mask = (t.to(device, non_blocking=True) for t in next(stream))
            with torch.autocast(device_type=device, dtype=torch.bfloat16):
                logits = forward(input_ids=ids).logits
            token_losses = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2)[:, :, :-1], ids[:, 1:],
                                                             reduction="none")
            loss = (token_losses * mask[:, :-1]).sum() / mask[:, :-1].sum()
            (loss / len(streams)).backward()
            losses[name].append(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0:
            recent = {n: round(torch.stack(v[-50:]).mean().item(), 4) for n, v in losses.items()}
            print(f"step {step} lr {lr_at(step, steps):.2e} loss {recent} {time.time() - started:.0f}s", flush=True)
        if step in (1, 1 + CALIBRATION_STEPS) and device == "cuda":
            torch.cuda.synchronize()
        if step == 1:
            timer = time.time()
        if step == 1 + CALIBRATION_STEPS and options["time_budget_s"]:
            steps = steps_within_budget(steps, options["time_budget_s"], (time.time() - timer) / CALIBRATION_STEPS,
                                        time.time() - started, step)
            print(f"{steps} steps fit the time budget", flush=True)
        step += 1
    train_seconds = time.time() - started
    final_losses = {n: round(torch.stack(v[-50:]).mean().item(), 5) for n, v in losses.items()}
    del streams, stream  # shuts the data workers down

    model = model.to(torch.bfloat16).eval()
    model.config.use_cache = True
    model.generation_config = generation_config(tokenizer)
    accuracy = {name: round(held_out_accuracy(model, tokenizer, task, options["eval_samples"]), 4)
                for name, task in TASKS.items() if options["eval_samples"]}
    print(f"held-out accuracy {accuracy or 'not measured (eval_samples=0)'}", flush=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    weights = out / "model.safetensors"
    manifest = {
        "command": command(options, step),
        "seed": seed,
        "steps": step,
        "lr": RECIPE.lr,
        "warmup": RECIPE.warmup,
        "batches": {name: {"examples": s.batch_size, "tokens_per_row": s.length} for name, s in specs.items()},
        "final_losses": final_losses,
        "held_out_accuracy": accuracy,
        "held_out_samples_per_task": options["eval_samples"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "train_seconds": round(train_seconds, 1),
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__},
    }
    if init:
        manifest["init"] = json.loads((Path(init) / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"{PROGRAM}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(train(options), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
