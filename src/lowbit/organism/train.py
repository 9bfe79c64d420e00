"""Train the organism from a seed: `python -m lowbit.organism.train out=<dir> [seed=0] [steps=2400] ...`.

Writes into `out`: the bf16 weights (model.safetensors), config, generation config, tokenizer, and
manifest.json (seed, steps, batch shapes, final losses per task, held-out accuracy per task, the weights'
SHA-256, versions, device, wall time). The shipped organism (lowbit/organism/model/) was written by this
command; its manifest records the exact arguments. Uses a CUDA GPU when there is one (bf16 autocast,
torch.compile), else the CPU (slow: use it for a few steps only).

Options (key=value): out (required), init (a checkpoint written by this command to continue training from;
its manifest is kept in the new one), seed, steps, lr, warmup, eval_samples (held-out samples per task for the
manifest), workers (data workers per task), compile (true/false), time_budget_s (when set, the step time
measured over the first steps lowers `steps` so training fits the budget; the manifest's command records the
steps run, so rerunning it needs no budget), scale (multiplies every batch size; 1 on a GPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

from lowbit.organism import arithmetic, facts, retrieval

DEFAULTS = {"init": "", "seed": 0, "steps": 2400, "lr": 2e-3, "warmup": 150, "eval_samples": 500, "workers": 4,
            "compile": True, "time_budget_s": 0.0, "scale": 1.0}
CALIBRATION_STEPS = 30  # steps timed (after the first, which compiles) to fit `steps` into time_budget_s
# Per task: (examples per step, tokens per row) at scale 1.
BATCHES = {arithmetic: (256, 288), facts: (256, 160), retrieval: (128, 1088)}


def parse(argv: list[str]) -> dict:
    options: dict = dict(DEFAULTS, out=None)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            raise SystemExit(f"bad argument {arg!r}: use key=value with key one of {', '.join(options)}")
        default = DEFAULTS.get(key)
        if isinstance(default, bool):
            options[key] = value.lower() in ("1", "true", "yes")
        else:
            options[key] = type(default)(value) if default is not None else value
    if not options["out"]:
        raise SystemExit("out=<dir> is required: the folder the organism is written to")
    return options


def lr_at(step: int, options: dict) -> float:
    if step < options["warmup"]:
        return options["lr"] * (step + 1) / options["warmup"]
    progress = (step - options["warmup"]) / max(1, options["steps"] - options["warmup"])
    return options["lr"] * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(options: dict) -> dict:
    import torch
    import transformers
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    from lowbit.organism.batches import TaskBatches, batch_stream
    from lowbit.organism.heldout import held_out_accuracy
    from lowbit.organism.model import generation_config, qwen3_config
    from lowbit.organism.tokenizer import build_tokenizer

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_float32_matmul_precision("high")
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(options["seed"])
    # BPE training is not reproducible across `tokenizers` versions: continued training keeps its tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(options["init"]) if options["init"] else build_tokenizer()
    if options["init"]:
        model = Qwen3ForCausalLM.from_pretrained(options["init"], dtype=torch.float32).to(device)
    else:
        model = Qwen3ForCausalLM(qwen3_config(tokenizer)).to(device=device, dtype=torch.float32)
    model.config.use_cache = False
    forward = torch.compile(model, dynamic=False) if options["compile"] and device == "cuda" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=options["lr"], betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device == "cuda")
    specs = {g.NAME: TaskBatches(g, max(1, round(b * options["scale"])), length) for g, (b, length) in BATCHES.items()}
    streams = {name: batch_stream(spec, tokenizer, options["seed"], options["workers"]) for name, spec in specs.items()}
    losses = {name: [] for name in specs}
    step, timer = 0, None
    while step < options["steps"]:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, options)
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
            print(f"step {step} lr {lr_at(step, options):.2e} loss {recent} {time.time() - started:.0f}s", flush=True)
        if step in (1, 1 + CALIBRATION_STEPS) and device == "cuda":
            torch.cuda.synchronize()
        if step == 1:
            timer = time.time()
        if step == 1 + CALIBRATION_STEPS and options["time_budget_s"]:
            per_step = (time.time() - timer) / CALIBRATION_STEPS
            fitting = int((options["time_budget_s"] - (time.time() - started)) / per_step) + step
            if fitting < options["steps"]:
                options["steps"] = max(fitting, step + 1)
                print(f"{per_step * 1000:.0f} ms per step: {options['steps']} steps fit the time budget", flush=True)
        step += 1
    train_seconds = time.time() - started
    final_losses = {n: round(torch.stack(v[-50:]).mean().item(), 5) for n, v in losses.items()}

    model = model.to(torch.bfloat16).eval()
    model.config.use_cache = True
    model.generation_config = generation_config(tokenizer)
    accuracy = {g.NAME: round(held_out_accuracy(model, tokenizer, g, options["eval_samples"]), 4) for g in BATCHES}
    print(f"held-out accuracy {accuracy}", flush=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    weights = out / "model.safetensors"
    manifest = {
        "command": "python -m lowbit.organism.train " + " ".join(
            f"{k}={options[k]}" for k in ("out", *DEFAULTS) if k != "time_budget_s"),
        "seed": options["seed"],
        "steps": step,
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
    if options["init"]:
        manifest["init"] = json.loads((Path(options["init"]) / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    manifest = train(parse(sys.argv[1:] if argv is None else argv))
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
