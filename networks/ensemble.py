"""Ensembles of independently trained models (the k fold models of a cross-validation) and their loading.

The CCF BDCI 2021 rank-1 inference meant to average five fold models, but its five model variables were one
object, so loading the five checkpoints in turn left the fold-5 weights in all of them (RECIPES 2.4).
:func:`load_fold_models` builds a new model per checkpoint and :class:`ProbabilityEnsemble` refuses to hold the
same module twice, so that cannot happen here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from monai.inferers import Inferer

__all__ = ["ProbabilityEnsemble", "load_fold_models", "read_state_dict"]

#: where a checkpoint dict may hold the network's state dict (MONAI ``CheckpointSaver`` ``save_dict`` names first)
STATE_DICT_KEYS = ("network", "model", "state_dict")


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, torch.Tensor]:
    """Read a state dict from a local checkpoint file with ``torch.load(weights_only=True)``.

    The file holds either a plain state dict or a dict with the state dict under ``key``; without ``key`` the
    first of ``"network"``, ``"model"``, ``"state_dict"`` present is used (MONAI ``CheckpointSaver`` files hold
    ``{name: state_dict}`` for each entry of their ``save_dict``).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: the file cannot be read, ``key`` is absent, or the content is not a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated, corrupt or unsafe files
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if isinstance(obj, Mapping):
        if key is not None:
            if key not in obj:
                raise ValueError(f"checkpoint {path} has no entry {key!r}; it has {sorted(map(str, obj))[:10]}")
            obj = obj[key]
        else:
            obj = next((obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)), obj)
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors (got {type(obj).__name__})")
    return dict(obj)


def load_fold_models(
    model_factory: Callable[[], nn.Module], checkpoint_paths: Sequence[str | Path], key: str | None = None
) -> list[nn.Module]:
    """One new model per checkpoint, each with its own weights, in eval mode.

    Args:
        model_factory: called once per checkpoint to build a fresh model (in a bundle config, the network's
            definition with ``"_mode_": "callable"``).
        checkpoint_paths: one checkpoint per fold (see :func:`read_state_dict` for the accepted contents).
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
        try:
            model.load_state_dict(read_state_dict(path, key))
        except RuntimeError as err:  # load_state_dict reports missing/unexpected keys and shape mismatches
            raise ValueError(f"checkpoint {path} does not fit the model: {err}") from err
        models.append(model.eval())
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
