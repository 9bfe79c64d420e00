"""Fake quantization of every MoE expert's input rows in one call, in the layout of transformers' grouped_mm
experts forward: the (token, expert) pairs sorted by expert, so expert e owns rows ends[e-1]:ends[e] of a
(rows, K) matrix, `ends` being the int32 cumulative row counts that grouped_mm takes as its offsets.

Which rows share a scale decides what a format needs here:
- row-local formats (their spec's `row_local`: per-token int8 / fp8, block mxfp8 / mxfp4) quantize each row on
  its own, so the whole matrix goes through the format's one-launch activation quantizer, whatever expert a
  row belongs to;
- NVFP4's global scale spans a tensor, and in an MoE it is the expert's own (vLLM keeps one input global scale
  per expert): 2688 / amax over the expert's rows. The Triton path computes every expert's amax in one
  reduction launch and quantizes all rows in a second (grouped_act_quant_triton.py), with no loop over experts
  and no host synchronisation. The torch reference applies the format's own activation reference to each
  expert's rows in turn, which is the definition the kernels are tested against bit for bit.
Rows past ends[-1] (none, unless experts are sharded, which the experts emulation refuses) are left
unspecified, as grouped_mm leaves them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lowbit.quant import fake_quant
from lowbit.quant.formats.backend import check_backend
from lowbit.quant.formats.spec import FormatSpec


def fake_quantize_grouped_ref(x: torch.Tensor, ends: torch.Tensor, spec: FormatSpec) -> torch.Tensor:
    """x (rows, K) with each expert's rows fake-quantized per `spec` on their own (torch reference)."""
    if spec.row_local:
        return spec.fake_quantize_activation(x)
    bounds = ends.tolist()
    if bounds and bounds[-1] != x.shape[0]:
        raise ValueError(f"ends must close at the row count {x.shape[0]}, got {bounds[-1]}; pass the cumulative "
                         "row counts of every expert")
    out = torch.empty_like(x)
    start = 0
    for end in bounds:
        if end > start:
            out[start:end] = spec.fake_quantize_activation(x[start:end])
        start = end
    return out


class GroupedActivationQuantizer:
    """(x (rows, K) sorted by expert, ends (E,) int32) -> x fake-quantized in `fmt`, each expert's global scale
    its own; resolved once per experts module, called twice per forward (gate_up and down inputs).

    `row_local` tells the caller that rows may be quantized before they are gathered per expert (the same
    values from fewer rows: the tokens, not the token-expert pairs); `rows` is then that quantizer.
    """

    def __init__(self, fmt: str | FormatSpec, backend: str):
        self.rows: Callable[[torch.Tensor], torch.Tensor] = fake_quant.activation_quantizer(fmt, backend)
        self.spec: FormatSpec = fake_quant.activation_spec(fmt)
        self.row_local = self.spec.row_local
        self._grouped: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        if not self.row_local:
            if backend == "triton":
                from lowbit.quant import grouped_act_quant_triton

                self._grouped = grouped_act_quant_triton.GroupedQuantizer(self.spec)
            else:
                self._grouped = lambda x, ends: fake_quantize_grouped_ref(x, ends, self.spec)

    def __call__(self, x: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        return self.rows(x) if self._grouped is None else self._grouped(x, ends)


def fake_quantize_grouped(x: torch.Tensor, ends: torch.Tensor, fmt: str | FormatSpec, *,
                          backend: str = "ref") -> torch.Tensor:
    """x (rows, K), rows sorted by expert with cumulative row counts `ends`, fake-quantized in `fmt` per expert."""
    check_backend(backend, x)
    return GroupedActivationQuantizer(fmt, backend)(x, ends)
