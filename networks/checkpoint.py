"""Reading network weights from local checkpoint files (ours, MONAI CheckpointSaver files, plain state dicts),
and averaging the weights of several checkpoints of one run."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "STATE_DICT_KEYS",
    "adapt_input_conv_weight",
    "average_checkpoints",
    "load_pretrained_encoder",
    "load_weights",
    "read_state_dict",
    "rename_keys_on_load",
    "unwrap_state_dict",
]

#: where a checkpoint dict may hold the network's state dict (MONAI ``CheckpointSaver`` ``save_dict`` names first)
STATE_DICT_KEYS = ("network", "model", "state_dict")


def unwrap_state_dict(checkpoint: Mapping) -> Mapping:
    """The state dict held by ``checkpoint``: its first ``"network"``/``"model"``/``"state_dict"`` entry that is a
    dict (training checkpoints wrap the weights with optimiser state and epoch counters), else ``checkpoint``."""
    return next((checkpoint[k] for k in STATE_DICT_KEYS if isinstance(checkpoint.get(k), Mapping)), checkpoint)


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
            obj = unwrap_state_dict(obj)
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"checkpoint {path} does not hold a state dict of tensors (got {type(obj).__name__})")
    return dict(obj)


def average_checkpoints(
    paths: Sequence[str | Path], key: str | None = None
) -> dict[str, torch.Tensor]:
    """The element-wise mean of the state dicts of ``paths`` (checkpoint averaging, "SWA" of the best epochs).

    The 4th-place RSNA 2022 cervical spine solution averages the weights of the 5 (ir-CSN) / 3 (ip-CSN) epochs
    with the best validation metric (selimsef/rsna_cervical_fracture, ``average_weights.py``). Floating-point
    tensors (weights and the BatchNorm running statistics, as there) are averaged in float64 and cast back to
    their dtype; other tensors (BatchNorm ``num_batches_tracked`` counters, integer buffers) are not averaged but
    taken from the first checkpoint, which callers pass best first (the reference keeps the first one's too).

    Args:
        paths: the checkpoint files, best first; each read by :func:`read_state_dict` with ``key``.
        key: entry of the checkpoint dicts that holds the state dict (see :func:`read_state_dict`).

    Raises:
        ValueError: no path; a file is unreadable; two files differ in keys, shapes or dtypes (the message names
            both files and the first differing keys).
    """
    if not paths:
        raise ValueError("average_checkpoints needs at least one checkpoint file")
    first_path = Path(paths[0])
    first = read_state_dict(first_path, key)
    sums = {k: v.double() for k, v in first.items() if v.is_floating_point()}
    for path in paths[1:]:
        state = read_state_dict(path, key)
        _check_same_layout(first_path, first, Path(path), state)
        for k in sums:
            sums[k] += state[k].double()
    return {k: (sums[k] / len(paths)).to(v.dtype) if k in sums else v.clone() for k, v in first.items()}


def _check_same_layout(
    path_a: Path, state_a: Mapping[str, torch.Tensor], path_b: Path, state_b: Mapping[str, torch.Tensor]
) -> None:
    problems = _layout_differences(path_a.name, state_a, path_b.name, state_b, dtypes=True)
    if problems:
        raise ValueError(f"cannot average checkpoints {path_a} and {path_b}: " + "; ".join(problems))


#: how many keys of each kind a layout error lists (a whole network's keys would be hundreds of lines)
_LISTED_KEYS = 5


def _layout_differences(
    name_a: str, state_a: Mapping[str, torch.Tensor], name_b: str, state_b: Mapping[str, torch.Tensor], dtypes: bool
) -> list[str]:
    """How two state dicts differ: keys only in one, shapes (and with ``dtypes``, dtypes) that differ; the first
    ``_LISTED_KEYS`` keys of each kind, with their shapes, and how many more."""

    def layout(tensor: torch.Tensor) -> str:
        return f"{tuple(tensor.shape)}/{tensor.dtype}" if dtypes else str(tuple(tensor.shape))

    only_a = [f"{k} {layout(state_a[k])}" for k in sorted(set(state_a) - set(state_b))]
    only_b = [f"{k} {layout(state_b[k])}" for k in sorted(set(state_b) - set(state_a))]
    differ = [
        f"{k} {layout(state_a[k])} != {layout(state_b[k])}"
        for k in sorted(set(state_a) & set(state_b))
        if state_a[k].shape != state_b[k].shape or (dtypes and state_a[k].dtype != state_b[k].dtype)
    ]
    kinds = (
        (f"keys only in {name_a}", only_a),
        (f"keys only in {name_b}", only_b),
        (f"{'shape/dtype' if dtypes else 'shape'} mismatch ({name_a} != {name_b})", differ),
    )
    return [
        f"{kind} ({len(keys)}): {', '.join(keys[:_LISTED_KEYS])}"
        + (f" and {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else "")
        for kind, keys in kinds
        if keys
    ]


def load_weights(network: nn.Module, path: str | Path, key: str | None = None) -> nn.Module:
    """Load the weights of checkpoint ``path`` (entry ``key``, see :func:`read_state_dict`) into ``network``.

    Returns the network, so that a bundle config can write ``"$networks.checkpoint.load_weights(@network_def,
    @model_path)"``.

    Raises:
        FileNotFoundError, ValueError: the file is missing or unreadable, or its weights do not fit the network;
            the message names the file and the network, and lists the first few missing, unexpected and mismatching
            keys with their shapes and how many more there are.
    """
    state_dict = read_state_dict(path, key)
    # checked here rather than left to load_state_dict, whose error lists every key (hundreds of lines)
    model = type(network).__name__
    problems = _layout_differences(model, network.state_dict(), Path(path).name, state_dict, dtypes=False)
    if problems:
        entry = "" if key is None else f" (its entry {key!r})"
        raise ValueError(f"checkpoint {path} does not fit {model}{entry}: " + "; ".join(problems))
    network.load_state_dict(state_dict)
    return network


def adapt_input_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a pretrained first-conv weight to ``in_channels`` like timm's ``adapt_input_conv``.

    The weight is ``(O, I, kh, kw)`` (2-D stem) or ``(O, I, kt, kh, kw)`` (3-D stem of a video backbone, e.g.
    mmaction2's ir-CSN). One channel: the sum over the input channels (a grey image seen as R = G = B gives the
    same response).
    Other counts (from a 3-channel weight): the RGB kernels repeated cyclically and scaled by ``3 / in_channels``.
    """
    if weight.ndim not in (4, 5):
        raise ValueError(f"expected a 4-D or 5-D conv weight, got shape {tuple(weight.shape)}")
    source = weight.shape[1]
    if in_channels == source:
        return weight
    dtype = weight.dtype
    weight = weight.float()
    if in_channels == 1:
        weight = weight.sum(dim=1, keepdim=True)
    elif source == 3:
        repeat = math.ceil(in_channels / 3)
        weight = weight.repeat(1, repeat, *([1] * (weight.ndim - 2)))[:, :in_channels] * (3.0 / in_channels)
    else:
        raise ValueError(f"cannot adapt a {source}-channel input conv to {in_channels} channels (needs 3 or 1)")
    return weight.to(dtype)


def load_pretrained_encoder(
    encoder: nn.Module,
    path: str | Path,
    remap: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> None:
    """Load pretrained weights from a local file into ``encoder`` (in place), strictly, with clear errors.

    The file is read by :func:`read_state_dict`; ``remap`` (if given) turns its names into the encoder's and
    drops what the encoder does not have (a classifier head); a stem of another channel count (RGB weights for
    a grey encoder) is adapted by :func:`adapt_input_conv_weight`; every encoder key must then be present with
    the right shape.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is unreadable or does not fit the encoder; the message names the file and the keys.
    """
    state = read_state_dict(path)
    if remap is not None:
        state = remap(state)
    expected = encoder.state_dict()
    stem_key = next(iter(expected))
    if stem_key in state and state[stem_key].ndim in (4, 5) and state[stem_key].shape != expected[stem_key].shape:
        try:
            state[stem_key] = adapt_input_conv_weight(state[stem_key], expected[stem_key].shape[1])
        except ValueError as err:
            raise ValueError(f"encoder weights {path}, key {stem_key!r}: {err}") from err
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{name} ({len(keys)}): {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
        for name, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong_shape))
        if keys
    ]
    if problems:
        raise ValueError(f"encoder weights {path} do not fit {type(encoder).__name__}: " + "; ".join(problems))
    encoder.load_state_dict(state, strict=True)


def rename_keys_on_load(module: nn.Module, renames: Mapping[str, str]) -> None:
    """Make ``module.load_state_dict`` accept checkpoints written before a module was renamed.

    ``renames`` maps old key prefixes (relative to ``module``) to new ones, e.g. ``{"decoder_long.head.":
    "head_long."}``; keys of an old checkpoint are renamed before loading, whatever loads them
    (:func:`load_weights`, MONAI's ``CheckpointLoader``, the fold ensembles), and wherever ``module`` sits in a
    bigger model. New checkpoints are written with the new names only.
    """
    renames = dict(renames)

    def rename(_module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, *args: object) -> None:
        for key in list(state_dict):
            for old, new in renames.items():
                if key.startswith(prefix + old):
                    state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
                    break

    module.register_load_state_dict_pre_hook(rename)
