"""Class-balanced sampling of training items, in one process or under DDP (MONAI's weighted distributed sampler).

The RSNA 2022 cervical spine classifier draws its training studies with probabilities that balance
``patient_overall``: each item weighs ``N / N_c`` (N items, N_c of them in the item's class), drawn with
replacement, per process from the process's share of the data (selimsef/rsna_cervical_fracture,
``training/sampler.py`` and ``ClassifierDatasetCropsFullRes.get_weights``). MONAI's
``DistributedWeightedRandomSampler`` does exactly that draw; it also works without an initialised process group
(one replica), so one sampler serves both cases.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import torch
from monai.data import DistributedWeightedRandomSampler
from torch.utils.data import Dataset

__all__ = ["class_balanced_sampler", "class_balanced_weights"]


def class_balanced_weights(labels: Sequence[Hashable]) -> np.ndarray:
    """Per item ``N / N_c``: every class then carries the same total weight (float64, one weight per item)."""
    if len(labels) == 0:
        raise ValueError("class_balanced_weights needs at least one label")
    values = [v.item() if isinstance(v, (np.generic, torch.Tensor)) else v for v in labels]
    counts: dict[Hashable, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return np.array([len(values) / counts[v] for v in values], dtype=np.float64)


def class_balanced_sampler(
    dataset: Dataset,
    labels: Sequence[Hashable],
    num_samples_per_rank: int | None = None,
    seed: int = 0,
    num_replicas: int | None = None,
    rank: int | None = None,
    generator: torch.Generator | None = None,
) -> DistributedWeightedRandomSampler:
    """A sampler drawing ``dataset`` items with :func:`class_balanced_weights` of ``labels`` (with replacement).

    Under DDP (an initialised process group, or ``num_replicas``/``rank`` given) each process draws from its
    share of the items, which the trainer reshuffles every epoch (``set_epoch``); without one it is a weighted
    random sampler over all items.

    Args:
        dataset: the training dataset (one item per label).
        labels: the class of each item, e.g. ``patient_overall`` of each study.
        num_samples_per_rank: draws per process and epoch (default: the process's share of the items).
        seed: seed of the per-epoch split between processes.
        num_replicas, rank: the process layout (default: from the process group, else 1 and 0).
        generator: random generator of the weighted draw.
    """
    if len(labels) != len(dataset):  # type: ignore[arg-type]
        raise ValueError(f"{len(labels)} labels for a dataset of {len(dataset)} items")  # type: ignore[arg-type]
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        num_replicas = 1 if num_replicas is None else num_replicas
        rank = 0 if rank is None else rank
    return DistributedWeightedRandomSampler(
        dataset,
        class_balanced_weights(labels).tolist(),
        num_samples_per_rank=num_samples_per_rank,
        generator=generator,
        num_replicas=num_replicas,
        rank=rank,
        seed=seed,
    )
