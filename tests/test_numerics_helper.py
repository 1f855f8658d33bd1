"""tests/helpers/numerics.assert_close_to_scale, the float comparison of the suite, fails when it should."""
from __future__ import annotations

import pytest
import torch
from helpers.numerics import FP32_DEEP_REL, assert_close_to_scale


def test_the_tolerance_is_a_fraction_of_the_values_scale():
    logits = torch.tensor([14.0, -3.0, 0.0])
    assert_close_to_scale(logits + torch.tensor([0.0, 0.0, 2.3e-5]), logits, rel=FP32_DEEP_REL)  # round-off seen
    with pytest.raises(AssertionError, match=r"max abs difference 0\.001 > 1e-05 × scale 14"):
        assert_close_to_scale(logits + torch.tensor([0.0, 0.0, 1e-3]), logits)
    assert_close_to_scale(logits * 1e-6 + torch.tensor([0.0, 0.0, 1e-12]), logits * 1e-6)  # the same, scaled


def test_shapes_nan_and_inf_must_match():
    with pytest.raises(AssertionError, match="shape"):
        assert_close_to_scale(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(AssertionError, match="NaN"):
        assert_close_to_scale(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 1.0]))
    with pytest.raises(AssertionError, match="infinities"):
        assert_close_to_scale(torch.tensor([float("inf")]), torch.tensor([-float("inf")]))
    special = torch.tensor([float("nan"), float("inf"), 2.0])
    assert_close_to_scale(special, special.clone())
