"""Float comparisons for tests that must not flake: tolerances relative to the values' scale.

fp32 round-off grows with the size of the values and with the length of the sums behind them, and it differs
between CPUs, kernel choices (oneDNN/MKL pick by CPU and thread count) and load. A fixed ``atol`` of 1e-5 on
logits of magnitude ~14 is a 7e-7 relative bound, tighter than fp32 promises after a deep network. Compare
against a fraction of the largest magnitude instead, or exactly where exactness is the point (the same kernel
on the same input twice: ``torch.equal``).
"""
from __future__ import annotations

from typing import Any

import torch

FP32_REL = 1e-5  # one block or op in fp32 computed two ways (different kernels, sum orders): ~100 ulps of the scale
FP32_DEEP_REL = 1e-4  # a whole fp32 network (tens of layers, each re-rounding): still 4 orders below a real bug
FP64_REL = 1e-10  # float64 results


def _tensor(x: Any) -> torch.Tensor:
    return torch.as_tensor(x).detach().to(torch.float64)


def assert_close_to_scale(actual: Any, expected: Any, *, rel: float = FP32_REL, msg: str = "") -> None:
    """``|actual - expected| <= rel × scale`` everywhere, ``scale`` = the largest magnitude of either.

    Shapes must match; NaN/inf must be equal in both. ``rel`` is a fraction of the values' scale, so the same
    bound serves logits of 14 and probabilities of 0.1.
    """
    a, e = _tensor(actual), _tensor(expected)
    prefix = f"{msg}: " if msg else ""
    assert a.shape == e.shape, f"{prefix}shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.equal(a.isnan(), e.isnan()), f"{prefix}NaN positions differ"
    inf = a.isinf() | e.isinf()
    assert torch.equal(a[inf], e[inf]), f"{prefix}infinities differ"
    keep = ~(a.isnan() | inf)
    a, e = a[keep], e[keep]
    if a.numel() == 0:
        return
    scale = max(float(a.abs().max()), float(e.abs().max()))
    diff = float((a - e).abs().max())
    assert diff <= rel * scale, (f"{prefix}max abs difference {diff:.3g} > {rel:g} × scale "
                                 f"{scale:.3g} = {rel * scale:.3g}")
