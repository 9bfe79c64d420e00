"""Launching a Triton kernel for a fixed input signature without Triton's per-call dispatch.

`kernel[grid](*args, **constexprs)` binds every argument, derives its specialization and looks the compiled
kernel up again on each call: 10-20 us of host time, more than the whole GPU time of a quantize kernel on a
decode-sized activation. Activation fake-quant launches one kernel per Linear call, and HF decode time is
host time, so that dispatch alone would add a third to every decode step.

A `Launch` compiles its kernel once, through Triton's regular path (`JITFunction.warmup`), for one signature:
the constexpr values and options, each tensor's dtype and device, and whether each pointer is 16-byte aligned
(the pointer specialization Triton applies). Calls then go straight to the compiled kernel's launcher, with
the arguments `JITFunction.run` gives it (grid, stream, function handle, packed metadata, launch hooks and
every kernel parameter; Triton >= 3.4). Integer arguments must be declared `do_not_specialize` on the kernel
(Triton would otherwise also specialize on an integer's divisibility by 16 and on the value 1) and must fit
in int32. A caller keeps one Launch per signature (and per ALIGNMENT of its pointers). Under
TRITON_INTERPRET=1 (CPU tests) every call takes the regular path.
"""

from __future__ import annotations

import os
from typing import Any

from triton import knobs
from triton.runtime import driver

INT32_MAX = 2**31 - 1
ALIGNMENT = 16  # bytes; Triton marks pointers aligned to this as divisible, and compiles for it


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def cdiv(numerator: int, denominator: int) -> int:
    """ceil(numerator / denominator), for grid sizes computed on every call: `triton.cdiv` is a constexpr function
    (Triton >= 3.4) whose wrapper costs 1-2 us of host time a call."""
    return -(-numerator // denominator)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n (n >= 1), without `triton.next_power_of_2`'s constexpr-function wrapper."""
    return 1 << (n - 1).bit_length()


def current_stream(device_index: int) -> int:
    """The handle of the current CUDA stream on a device (0 under the interpreter, whose device index is -1)."""
    return 0 if device_index < 0 else driver.active.get_current_stream(device_index)


class Launch:
    """`kernel` with fixed constexprs and options, compiled for the signature of `example_args`.

    direct=False (or the interpreter) keeps Triton's regular launch path, e.g. for integers beyond int32.
    """

    def __init__(self, kernel: Any, example_args: tuple, constexprs: dict[str, Any], *, direct: bool = True,
                 **options: Any):
        runtime_names = kernel.arg_names[: len(example_args)]
        constexpr_names = kernel.arg_names[len(example_args):]
        if set(constexpr_names) != set(constexprs):
            raise ValueError(f"{kernel} takes {runtime_names} at run time and constexprs {constexpr_names}, "
                             f"got constexprs {sorted(constexprs)}")
        self.kernel, self.constexprs, self.options = kernel, constexprs, options
        self._tail = tuple(constexprs[name] for name in constexpr_names)  # the launcher takes every parameter
        self._compiled = None
        if direct and not interpreted():
            for param, value in zip(kernel.params, example_args):
                if isinstance(value, int) and not param.do_not_specialize:
                    raise ValueError(f"{kernel}: integer argument {param.name} must be declared do_not_specialize")
            compiled = kernel.warmup(*example_args, grid=(1,), **constexprs, **options)
            self._compiled = compiled.result() if hasattr(compiled, "result") else compiled
            self._compiled.run  # noqa: B018 (loads the module and creates the launcher now, not at the first call)

    def pointer_args(self, tensors: tuple) -> tuple:
        """What to pass for `tensors` that outlive this Launch's calls (the caller keeps them): on a direct launch
        their device addresses, which spare the launcher a data_ptr call and a driver pointer query per tensor on
        every call; on Triton's regular path the tensors themselves."""
        return tuple(t.data_ptr() for t in tensors) if self._compiled is not None else tensors

    def __call__(self, grid: int, *args: Any) -> None:
        """Launch on `grid` programs; args must have the signature the Launch was made for (the first a tensor
        on its device; later pointer arguments may come from `pointer_args`)."""
        compiled = self._compiled
        if compiled is None:
            self.kernel[(grid,)](*args, **self.constexprs, **self.options)
            return
        stream = current_stream(args[0].get_device())
        enter, leave = knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook  # profilers (proton)
        metadata = compiled.launch_metadata((grid, 1, 1), stream, *args, *self._tail) if enter else None
        compiled.run(grid, 1, 1, stream, compiled.function, compiled.packed_metadata, metadata, enter, leave,
                     *args, *self._tail)
