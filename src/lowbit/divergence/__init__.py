"""Token-level fidelity of a candidate (a quantized checkpoint, or an emulated precision) against its baseline:
KL divergence of the next-token distributions, top-token agreement, perplexity ratio, change of the baseline's
top-token probability, on the same teacher-forced token sequences (a baseline run's completions, or a corpus).

    kl.py         per-token figures, exact or against a stored top-k reference (with its error bound)
    sequences.py  the token sequences: a run's prompts and completions, or corpus chunks
    engine.py     batching and forward passes (decoder once, logits a slice at a time)
    vllm_backend.py   the vLLM backend: every sequence's top-k prompt log-probabilities from one engine
    reference.py  the stored reference file
    summary.py    per-sequence lines and metrics with sequence-bootstrap intervals
    runner.py     the flow of `lowbit divergence` and its output run directory
    cli.py        the command
"""
