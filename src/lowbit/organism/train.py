"""Train the organism from a seed: `python -m lowbit.organism.train out=<dir>` runs the shipped recipe.

The recipe (lowbit.organism.recipe.RECIPE) is two stages run in sequence in this one process: stage 1 trains from
random weights and writes its checkpoint to `<out>/stage1/`; stage 2 continues from that checkpoint (its bf16
weights and tokenizer, a fresh optimizer) and writes the final organism to `<out>`. Each checkpoint holds the
bf16 weights (model.safetensors), config, generation config, tokenizer and manifest.json: the stage, seed,
steps, learning rate, warmup, retrieval form, batch shapes, final losses and held-out accuracy per task, the
weights' SHA-256, versions, device and training time, with the checkpoint it continued from nested under
"init"; its "command" is the command line that reproduces it. Uses a CUDA GPU when there is one (bf16 autocast,
torch.compile: minutes on an H200), else the CPU (far slower: use it for a few steps only).

Options (key=value; every one but out has a default that reproduces the shipped recipe):
  out            the folder the organism is written to (required)
  stages         which recipe stages to run, in order: 1, 2 or 1,2 (default: all)
  init           a checkpoint written by this command for the first stage run to continue from, instead of
                 random weights; its tokenizer is kept and its manifest nested as "init" (`init=<dir>
                 stages=2` runs stage 2 on a stage-1 checkpoint)
  seed           added to every stage's recipe seed (default 0: the recipe's seeds)
  steps          one number: the total optimizer steps, shared among the stages run in proportion to their
                 recipe steps (warmups unchanged); or one number per stage run, e.g. 5775,2649 (default: the
                 recipe's)
  eval_samples   held-out samples per task for each stage's manifest (500; 0 leaves the evaluation out)
  workers        data workers per task (5); each worker draws its own stream, so this changes the batches
  compile        torch.compile on a GPU (true)
  time_budget_s  when set, the first stage times its first steps and lowers every stage's steps in one
                 proportion so the run's training fits the budget (later stages' step times estimated from
                 their tokens per step); the manifest's command records the steps run, so rerunning it needs no
                 budget
  scale          multiplies every batch size of every stage (1 on a GPU)
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
from lowbit.organism.recipe import RECIPE, TASKS, Stage, split_steps, tokens_per_step

PROGRAM = "python -m lowbit.organism.train"
OPTIONS = {"out": str, "stages": int | list[int], "init": str, "seed": int, "steps": int | list[int],
           "eval_samples": int, "workers": int, "compile": bool, "time_budget_s": float, "scale": float}
DEFAULTS = {"stages": list(range(1, len(RECIPE) + 1)), "init": "", "seed": 0, "steps": None, "eval_samples": 500,
            "workers": 5, "compile": True, "time_budget_s": 0.0, "scale": 1.0}
# The options a manifest's command records (time_budget_s is not: the steps it allowed are recorded instead).
RECORDED = ("out", "stages", "init", "seed", "steps", "eval_samples", "workers", "compile", "scale")
CALIBRATION_STEPS = 30  # steps timed (after the first, which compiles) to fit the run into time_budget_s


def parse(argv: list[str]) -> dict:
    """The run's options from key=value items, with `stages` and `steps` as lists (one entry per stage run)."""
    from lowbit.overrides import parse_options, require

    options = {**DEFAULTS, **parse_options(argv, OPTIONS, command="organism.train")}
    require(options, "out", "out=organism")
    stages = options["stages"] if isinstance(options["stages"], list) else [options["stages"]]
    if not stages or any(not 1 <= n <= len(RECIPE) for n in stages) or stages != sorted(set(stages)):
        raise UsageError(f"stages={','.join(map(str, stages))}: name recipe stages 1 to {len(RECIPE)} in order, "
                         "e.g. stages=1 or stages=1,2")
    options["stages"] = stages
    options["steps"] = _steps_per_stage(options["steps"], stages)
    for key, low in (("eval_samples", 0), ("workers", 0)):
        if options[key] < low:
            raise UsageError(f"{key}={options[key]}: must be at least {low}")
    if options["scale"] <= 0 or options["time_budget_s"] < 0:
        raise UsageError("scale must be above 0 and time_budget_s at least 0 (0: no budget)")
    init = Path(options["init"]) if options["init"] else None
    if init and not ((init / "manifest.json").is_file() and (init / "model.safetensors").is_file()):
        raise UsageError(f"init={init}: not a checkpoint written by this command (it needs manifest.json and "
                         "model.safetensors); give the out= folder of an earlier run")
    return options


def _steps_per_stage(steps: int | list[int] | None, stages: list[int]) -> list[int]:
    if steps is None:
        return [RECIPE[number - 1].steps for number in stages]
    if isinstance(steps, int):
        if steps < len(stages):
            raise UsageError(f"steps={steps}: at least one step per stage run ({len(stages)})")
        return split_steps(steps, stages)
    if len(steps) != len(stages) or min(steps) < 1:
        raise UsageError(f"steps={','.join(map(str, steps))}: give one total, or one positive number per stage "
                         f"run ({len(stages)}), e.g. steps={','.join(str(RECIPE[n - 1].steps) for n in stages)}")
    return steps


def command(options: dict, out: str, stages: list[int], steps: list[int]) -> str:
    """The command line that runs `stages` with `steps` and the rest of `options`, writing to `out`."""
    values = {**options, "out": out, "stages": stages, "steps": steps}
    items = [f"{key}={_text(values[key])}" for key in RECORDED if key != "init" or values["init"]]
    return " ".join([PROGRAM, *map(shlex.quote, items)])


def _text(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def lr_at(step: int, stage: Stage, steps: int) -> float:
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, steps - stage.warmup)
    return stage.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def fit_time_budget(plan: list[int], options: dict, per_step: float, elapsed: float, step: int) -> None:
    """Lower every stage's planned steps (`plan`, in place) in one proportion so the run's training fits
    time_budget_s, from the first stage's measured seconds per step after `step` steps and `elapsed` seconds."""
    stages = [RECIPE[number - 1] for number in options["stages"]]
    first_tokens = tokens_per_step(stages[0], options["scale"])
    needed = sum(per_step * tokens_per_step(stage, options["scale"]) / first_tokens * steps
                 for stage, steps in zip(stages, plan))
    available = options["time_budget_s"] - (elapsed - per_step * (step + 1))  # the budget less setup time
    if needed <= available:
        return
    plan[:] = [max(1, int(steps * available / needed)) for steps in plan]
    plan[0] = max(plan[0], step + 1)
    print(f"{per_step * 1000:.0f} ms per step: {'+'.join(map(str, plan))} steps fit the time budget", flush=True)


def train(options: dict) -> dict:
    """Run the stages of `options` (as `parse` returns them) in order; the last stage's manifest."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    plan = list(options["steps"])
    started = time.time()
    init = options["init"]
    manifest: dict = {}
    for index, number in enumerate(options["stages"]):
        last = index == len(options["stages"]) - 1
        out = options["out"] if last else str(Path(options["out"]) / f"stage{number}")
        manifest = _train_stage(index, init, out, options, plan, started)
        init = out
    return manifest


def _train_stage(index: int, init: str, out_dir: str, options: dict, plan: list[int], run_started: float) -> dict:
    import torch
    import transformers
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from lowbit.organism.batches import TaskBatches, batch_stream
    from lowbit.organism.heldout import held_out_accuracy
    from lowbit.organism.model import generation_config, qwen3_config
    from lowbit.organism.tokenizer import build_tokenizer

    number = options["stages"][index]
    stage = RECIPE[number - 1]
    seed = stage.seed + options["seed"]
    print(f"stage {number}: {plan[index]} steps, seed {seed}" + (f", from {init}" if init else ""), flush=True)
    torch.set_float32_matmul_precision("high")
    out = Path(out_dir)
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device == "cuda")
    generators = stage.training_generators()
    specs = {name: TaskBatches(name, generators[name], examples, length)
             for name, (examples, length) in stage.batch_shapes(options["scale"]).items()}
    streams = {name: batch_stream(spec, tokenizer, seed, options["workers"]) for name, spec in specs.items()}
    losses = {name: [] for name in specs}
    step, timer = 0, None
    while step < plan[index]:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, stage, plan[index])
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
            print(f"step {step} lr {lr_at(step, stage, plan[index]):.2e} loss {recent} "
                  f"{time.time() - started:.0f}s", flush=True)
        if step in (1, 1 + CALIBRATION_STEPS) and device == "cuda":
            torch.cuda.synchronize()
        if step == 1:
            timer = time.time()
        if index == 0 and step == 1 + CALIBRATION_STEPS and options["time_budget_s"]:
            fit_time_budget(plan, options, (time.time() - timer) / CALIBRATION_STEPS, time.time() - run_started,
                            step)
        step += 1
    train_seconds = time.time() - started
    final_losses = {n: round(torch.stack(v[-50:]).mean().item(), 5) for n, v in losses.items()}
    del streams, stream  # shuts the data workers down

    model = model.to(torch.bfloat16).eval()
    model.config.use_cache = True
    model.generation_config = generation_config(tokenizer)
    accuracy = {name: round(held_out_accuracy(model, tokenizer, task, options["eval_samples"]), 4)
                for name, task in TASKS.items() if options["eval_samples"]}
    print(f"stage {number} held-out accuracy {accuracy or 'not measured (eval_samples=0)'}", flush=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    weights = out / "model.safetensors"
    manifest = {
        "command": command(options, out_dir, options["stages"][:index + 1], plan[:index + 1]),
        "stage": number,
        "seed": seed,
        "steps": step,
        "lr": stage.lr,
        "warmup": stage.warmup,
        "retrieval_form": stage.retrieval_form,
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
