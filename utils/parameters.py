"""Optimizer parameter groups."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["decay_parameter_groups"]


def decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on the weights of convolutions and linear layers, none on biases and norm
    parameters (every parameter with fewer than 2 dimensions), the usual exemption that the RSNA 2022 cervical
    spine solution (selimsef/rsna_cervical_fracture, ``training/trainer.py``) also makes."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
