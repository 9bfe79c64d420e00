"""tests/quant: Triton kernels run on the GPU when there is one, else in Triton's CPU interpreter.

TRITON_INTERPRET must be set before triton is imported, so it is set here, at collection time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    # Triton's interpreter casts NaN/Inf/overflowing test values through numpy, which warns; the kernels'
    # results are compared bit for bit with the references, so the warnings carry no information.
    config.addinivalue_line("filterwarnings", "ignore::RuntimeWarning:triton.runtime.interpreter")
