"""Dice per image of binary masks."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.ccf_bdci import dice_score


def test_dice_of_binary_masks():
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    assert dice_score(a, b) == 1.0  # both empty
    a[:5] = 255
    assert dice_score(a, b) == 0.0
    b[:5, :5] = 1
    assert dice_score(a, b) == pytest.approx(2 * 25 / (50 + 25))
    with pytest.raises(ValueError, match="differs"):
        dice_score(a, b[:5])
