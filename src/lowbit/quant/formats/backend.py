"""Backend choice and input validation shared by the format modules.

Every public `quantize`/`dequantize` takes `backend="ref"|"triton"`; the `*_ref` functions never dispatch.
"""

import functools
import importlib.util
import os

import torch

BACKENDS = ("ref", "triton")
WEIGHT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@functools.cache
def triton_available() -> bool:
    """Whether triton is installed (looked up once: find_spec costs tens of microseconds, and the fake-quant
    hooks check the backend on every Linear call)."""
    return importlib.util.find_spec("triton") is not None


def check_backend(backend: str, *tensors: torch.Tensor) -> str:
    """Return `backend` if it can run on these tensors, else raise ValueError naming the fix."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package: pip install triton (or use backend='ref')")
        on_cpu = any(t.device.type != "cuda" for t in tensors)
        if on_cpu and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                "backend='triton' needs CUDA tensors; move them to a GPU, set TRITON_INTERPRET=1 before importing "
                "triton, or use backend='ref'"
            )
    return backend


def check_float_tensor(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in WEIGHT_DTYPES:
        raise ValueError(f"{name} has dtype {x.dtype}; convert it to bfloat16, float16 or float32 first")
    if x.ndim == 0 or x.numel() == 0:
        raise ValueError(f"{name} must be a non-empty tensor with at least one dimension, got shape {tuple(x.shape)}")


def check_matrix(x: torch.Tensor, name: str) -> None:
    check_float_tensor(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (out_features, in_features), got shape {tuple(x.shape)}; reshape it")


def check_last_dim_divisible(x: torch.Tensor, block: int, name: str) -> None:
    if x.shape[-1] % block != 0:
        raise ValueError(
            f"{name} last dimension {x.shape[-1]} is not divisible by the block size {block}; "
            f"pad it to a multiple of {block} or leave this layer unquantized"
        )


def check_finite_amax(amax: torch.Tensor, name: str) -> None:
    """`amax` (a max of |x|) is NaN or Inf exactly when x holds a NaN or Inf."""
    if not bool(torch.isfinite(amax).all()):
        raise ValueError(f"{name} contains NaN or Inf; fix the checkpoint (or skip this layer) before quantizing")


def check_packed(x: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != dtype:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a {dtype} tensor as produced by quantize(), got {got}")


def check_out_dtype(dtype: torch.dtype) -> None:
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"out_dtype must be torch.bfloat16, torch.float16 or torch.float32, got {dtype}")
