"""The stored reference: a baseline's top-k log-probabilities at every scored position, written once (safetensors,
beside the baseline run or in the output directory) and reused for every candidate scored on the same sequences.

The file name carries a fingerprint of what the figures depend on: the baseline model, its emulation settings,
k, and every sequence's tokens and scored range. Size per scored token: k x (4 B id + 4 B log-probability) +
8 B (rest log-mass, target log-probability), e.g. 264 B at k = 32, 264 MB per million tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from lowbit.divergence.kl import TopK
from lowbit.divergence.sequences import Sequence
from lowbit.records import process_umask


def fingerprint(sequences: list[Sequence], baseline: dict, k: int) -> str:
    digest = hashlib.sha256(json.dumps({"baseline": baseline, "k": k}, sort_keys=True).encode())
    for sequence in sequences:
        digest.update(f"{sequence.id}:{sequence.first_scored}:".encode())
        digest.update(torch.tensor(sequence.token_ids, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()[:16]


def bytes_per_token(k: int) -> int:
    return k * 8 + 8


def write(path: Path, reference: TopK, meta: dict) -> None:
    from safetensors.torch import save_file

    temporary = path.with_name(path.name + ".tmp")
    save_file({"ids": reference.ids.contiguous(), "logprobs": reference.logprobs.contiguous(),
               "rest_logmass": reference.rest_logmass.contiguous(),
               "target_logprob": reference.target_logprob.contiguous()},
              str(temporary), metadata={"lowbit_divergence": json.dumps(meta)})
    temporary.chmod(0o666 & ~process_umask())  # safetensors writes 0600; the reference is shared like run files
    os.replace(temporary, path)


def read(path: Path) -> TopK:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return TopK(tensors["ids"], tensors["logprobs"], tensors["rest_logmass"], tensors["target_logprob"])
