"""Teacher-forced forward passes over batches of sequences, and the per-token figures of each sequence.

Sequences are sorted by length and packed into batches of at most `batch_tokens` padded tokens (right padding:
a causal model's real tokens never attend to it). Each model runs its decoder once per batch; only the hidden
states of scored positions are kept, and logits are formed from them a slice at a time (kl.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from lowbit.divergence import kl
from lowbit.divergence.sequences import Sequence


@dataclass
class Batch:
    sequences: list[Sequence]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor  # scored positions: batch row, position of the predicting token, and its target
    cols: torch.Tensor
    targets: torch.Tensor

    @property
    def scored(self) -> list[int]:
        return [len(s.token_ids) - s.first_scored for s in self.sequences]


def batches(sequences: list[Sequence], batch_tokens: int, pad_id: int) -> Iterator[Batch]:
    ordered = sorted(sequences, key=lambda s: -len(s.token_ids))
    start = 0
    while start < len(ordered):
        width = len(ordered[start].token_ids)
        count = max(1, min(len(ordered) - start, batch_tokens // width))
        members = ordered[start:start + count]
        start += count
        input_ids = torch.full((len(members), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(members), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for row, sequence in enumerate(members):
            length = len(sequence.token_ids)
            input_ids[row, :length] = torch.tensor(sequence.token_ids)
            attention_mask[row, :length] = 1
            rows.extend([row] * (length - sequence.first_scored))
            cols.extend(range(sequence.first_scored - 1, length - 1))
            targets.extend(sequence.token_ids[sequence.first_scored:])
        yield Batch(members, input_ids, attention_mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets))


class ScoringModel:
    """A loaded causal LM seen as a decoder (token ids -> final hidden states) and an output head."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def scored_hidden(self, batch: Batch) -> torch.Tensor:
        """(scored positions, hidden) final hidden states of the batch's scored positions."""
        output = self.decoder(input_ids=batch.input_ids.to(self.device),
                              attention_mask=batch.attention_mask.to(self.device), use_cache=False)
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        return hidden[batch.rows.to(hidden.device), batch.cols.to(hidden.device)]


def split(stats: kl.TokenStats, scored: list[int]) -> list[dict[str, np.ndarray]]:
    """Per-sequence numpy arrays from a batch's flat per-token figures (on whatever device they were computed)."""
    fields = {"kl": stats.kl, "same_top": stats.same_top, "base_nll": stats.base_nll, "cand_nll": stats.cand_nll,
              "top_prob_change": stats.top_prob_change}
    if stats.kl_error_bound is not None:
        fields["kl_error_bound"] = stats.kl_error_bound
    if stats.reference_missing is not None:
        fields["reference_missing"] = stats.reference_missing
    arrays = {name: value.cpu().numpy() for name, value in fields.items()}
    bounds = np.cumsum([0, *scored])
    return [{name: value[bounds[i]:bounds[i + 1]] for name, value in arrays.items()} for i in range(len(scored))]


@torch.inference_mode()
def exact_batch(baseline: ScoringModel, candidate: ScoringModel, batch: Batch) -> list[dict[str, np.ndarray]]:
    stats = kl.exact_stats(baseline.head, baseline.scored_hidden(batch), candidate.head,
                           candidate.scored_hidden(batch), batch.targets.to(baseline.device))
    return split(stats, batch.scored)


@torch.inference_mode()
def reference_batch(baseline: ScoringModel, batch: Batch, k: int) -> kl.TopK:
    return kl.top_k_reference(baseline.head, baseline.scored_hidden(batch), batch.targets.to(baseline.device), k)


@torch.inference_mode()
def stored_batch(reference: kl.TopK, candidate: ScoringModel, batch: Batch) -> list[dict[str, np.ndarray]]:
    stats = kl.stored_stats(reference, candidate.head, candidate.scored_hidden(batch),
                            batch.targets.to(candidate.device))
    return split(stats, batch.scored)
