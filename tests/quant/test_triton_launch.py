"""triton_launch's host-side arithmetic gives what Triton's own helpers give, without their per-call cost."""

import pytest

triton = pytest.importorskip("triton")

from lowbit.quant.formats import triton_launch  # noqa: E402


def test_cdiv_and_next_power_of_2_agree_with_tritons():
    for n in range(1, 4100):
        assert triton_launch.next_power_of_2(n) == triton.next_power_of_2(n)
        for d in (1, 3, 16, 64, 2048):
            assert triton_launch.cdiv(n, d) == triton.cdiv(n, d)
    assert triton_launch.cdiv(2**31 + 5, 4096) == triton.cdiv(2**31 + 5, 4096)
