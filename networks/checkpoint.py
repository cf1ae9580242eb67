"""Reading network weights from local checkpoint files (ours, MONAI CheckpointSaver files, plain state dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["STATE_DICT_KEYS", "load_weights", "read_state_dict"]

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


def load_weights(network: nn.Module, path: str | Path, key: str | None = None) -> nn.Module:
    """Load the weights of checkpoint ``path`` (entry ``key``, see :func:`read_state_dict`) into ``network``.

    Returns the network, so that a bundle config can write ``"$networks.checkpoint.load_weights(@network_def,
    @model_path)"``.

    Raises:
        FileNotFoundError, ValueError: the file is missing or unreadable, or its weights do not fit the network
            (missing/unexpected keys, shapes); the message names the file.
    """
    state_dict = read_state_dict(path, key)
    try:
        network.load_state_dict(state_dict)
    except RuntimeError as err:  # load_state_dict reports missing/unexpected keys and shape mismatches
        raise ValueError(f"checkpoint {path} does not fit {type(network).__name__}: {err}") from err
    return network
