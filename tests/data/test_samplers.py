"""Class-balanced sampler: weights, balance of the draws, disjoint shares under DDP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.samplers import class_balanced_sampler, class_balanced_weights


def test_weights_give_each_class_the_same_total():
    labels = [0] * 8 + [1] * 2
    weights = class_balanced_weights(labels)
    np.testing.assert_allclose(weights, [10 / 8] * 8 + [10 / 2] * 2)
    assert weights[:8].sum() == pytest.approx(weights[8:].sum())
    with pytest.raises(ValueError, match="at least one"):
        class_balanced_weights([])


def test_single_process_draws_are_balanced():
    labels = [0] * 90 + [1] * 10
    sampler = class_balanced_sampler(list(range(100)), labels, num_samples_per_rank=4000,
                                     generator=torch.Generator().manual_seed(0))
    drawn = np.array([labels[i] for i in sampler])
    assert len(drawn) == 4000 and abs(drawn.mean() - 0.5) < 0.05


def test_ranks_draw_from_disjoint_shares():
    labels = [0, 1] * 10
    shares = []
    for rank in range(2):
        sampler = class_balanced_sampler(list(range(20)), labels, num_replicas=2, rank=rank, seed=3)
        sampler.set_epoch(1)
        shares.append(set(sampler))
        assert len(sampler) == 10
    assert not shares[0] & shares[1]
    with pytest.raises(ValueError, match="3 labels for a dataset of 2"):
        class_balanced_sampler([0, 1], [0, 1, 1])
