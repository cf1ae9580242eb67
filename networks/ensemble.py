"""Ensembles of independently trained models (the k fold models of a cross-validation) and their loading.

The CCF BDCI 2021 rank-1 inference meant to average five fold models, but its five model variables were one
object, so loading the five checkpoints in turn left the fold-5 weights in all of them (chaineypung/CCF-BDCI-2021-ULSEG-Rank1st, inference script).
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
    """(Weighted) mean of the probabilities of several models: ``sum_m w_m activation(inferer(x, model_m)) / sum w``.

    With ``inferer`` (e.g. :class:`inferers.FlipTTAInferer`) each model's logits are first merged over the
    test-time augmentations, as the CCF BDCI recipe does: TTA mean of logits per model, sigmoid, mean over models.
    With ``weights`` and a callable ``activation`` it is also the AI Challenger OCT fusion of a UNet++ and a UNet
    (0.5 / 0.5 on softmax segmentation and sigmoid detection probabilities,
    :func:`networks.unet_plus_plus.seg_det_probabilities`).

    Args:
        models: the member models, distinct objects (see :func:`load_fold_models`).
        activation: ``"sigmoid"`` (binary / multi-label logits), ``"softmax"`` (over the channel dim 1), or a
            callable mapping one model's output to probabilities of the same shape (packed outputs).
        inferer: how each model is run on the input, default ``model(x)``.
        weights: one non-negative weight per model (normalised by their sum); default equal weights.
        return_members: also return each member's probabilities: the output is then the ensemble followed by the
            members, concatenated on the channel dim (``(1 + M) * C`` channels), so that one pass scores all.

    Raises:
        ValueError: no models, an unknown activation, the same module object given twice, or weights that are not
            one non-negative value per model with a positive sum.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        activation: str | Callable[[torch.Tensor], torch.Tensor] = "sigmoid",
        inferer: Inferer | None = None,
        weights: Sequence[float] | None = None,
        return_members: bool = False,
    ) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("ProbabilityEnsemble needs at least one model")
        if len({id(m) for m in models}) != len(models):
            raise ValueError("the same model object appears more than once; each member needs its own weights")
        if not callable(activation) and activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid', 'softmax' or a callable, got {activation!r}")
        weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
        if len(weights) != len(models) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"need one non-negative weight per model with a positive sum, got {weights}")
        self.models = nn.ModuleList(models)
        self.activation = activation
        self.inferer = inferer
        self.weights = [w / sum(weights) for w in weights]
        self.return_members = return_members

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        if callable(self.activation):
            return self.activation(logits)
        return torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = []
        for model in self.models:
            logits = self.inferer(x, model) if self.inferer is not None else model(x)
            probabilities.append(self._probabilities(logits))
        mean = sum(w * p for w, p in zip(self.weights, probabilities))
        return torch.cat([mean] + probabilities, dim=1) if self.return_members else mean
