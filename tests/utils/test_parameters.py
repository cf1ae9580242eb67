from __future__ import annotations

import torch
import torch.nn as nn

from utils.parameters import decay_parameter_groups


def test_weights_decay_and_biases_and_norms_do_not():
    model = nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2), nn.Flatten(), nn.Linear(2, 3))
    model(torch.zeros(2, 1, 3, 3, 3))
    decay, no_decay = decay_parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert sorted(p.ndim for p in decay["params"]) == [2, 5]
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias
