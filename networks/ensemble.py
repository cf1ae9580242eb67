"""Ensembles of independently trained models (the k fold models of a cross-validation) and their loading.

The CCF BDCI 2021 rank-1 inference meant to average five fold models, but its five model variables were one
object, so loading the five checkpoints in turn left the fold-5 weights in all of them (RECIPES 2.4).
:func:`load_fold_models` builds a new model per checkpoint and :class:`ProbabilityEnsemble` refuses to hold the
same module twice, so that cannot happen here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from monai.inferers import Inferer

from networks.checkpoint import load_weights

__all__ = ["ProbabilityEnsemble", "load_fold_models"]

def load_fold_models(
    model_factory: Callable[[], nn.Module], checkpoint_paths: Sequence[str | Path], key: str | None = None
) -> list[nn.Module]:
    """One new model per checkpoint, each with its own weights, in eval mode.

    Args:
        model_factory: called once per checkpoint to build a fresh model (in a bundle config, the network's
            definition with ``"_mode_": "callable"``).
        checkpoint_paths: one checkpoint per fold (see :func:`networks.checkpoint.read_state_dict` for the accepted contents).
        key: the entry holding the state dict in a checkpoint dict, default ``network``/``model``/``state_dict``.

    Raises:
        FileNotFoundError, ValueError: a checkpoint is missing, unreadable, or does not fit the model (the message
            names the file); the factory returned the same object twice.
    """
    if not checkpoint_paths:
        raise ValueError("checkpoint_paths is empty: give one checkpoint per fold model")
    models: list[nn.Module] = []
    for path in checkpoint_paths:
        model = model_factory()
        if any(model is m for m in models):
            raise ValueError("model_factory returned the same module twice; it must build a new model per call")
        models.append(load_weights(model, path, key).eval())
    return models


class ProbabilityEnsemble(nn.Module):
    """Mean of the probabilities of several models: ``mean_m activation(inferer(x, model_m))``.

    With ``inferer`` (e.g. :class:`inferers.FlipTTAInferer`) each model's logits are first merged over the
    test-time augmentations, as the CCF BDCI recipe does: TTA mean of logits per model, sigmoid, mean over models.

    Args:
        models: the member models, distinct objects (see :func:`load_fold_models`).
        activation: ``"sigmoid"`` (binary / multi-label logits) or ``"softmax"`` (over the channel dim 1).
        inferer: how each model is run on the input, default ``model(x)``.

    Raises:
        ValueError: no models, an unknown activation, or the same module object given twice.
    """

    def __init__(
        self, models: Sequence[nn.Module], activation: str = "sigmoid", inferer: Inferer | None = None
    ) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("ProbabilityEnsemble needs at least one model")
        if len({id(m) for m in models}) != len(models):
            raise ValueError("the same model object appears more than once; each member needs its own weights")
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")
        self.models = nn.ModuleList(models)
        self.activation = activation
        self.inferer = inferer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = []
        for model in self.models:
            logits = self.inferer(x, model) if self.inferer is not None else model(x)
            probabilities.append(torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, 1))
        return torch.stack(probabilities).mean(dim=0)
