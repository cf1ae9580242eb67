"""Cross-validation splits: scikit-learn-compatible folds reject bad input with a clear message."""

from __future__ import annotations

import pytest

from data.splits import sklearn_kfold, sklearn_stratified_kfold


def test_sklearn_kfold_partitions_deterministically():
    ids = [f"s{i}" for i in range(10)]
    folds = sklearn_kfold(ids, 4, 777)
    assert folds == sklearn_kfold(ids, 4, 777) and sorted(sum(folds, [])) == sorted(ids)
    assert [len(f) for f in folds] == [3, 3, 2, 2]


def test_sklearn_kfold_checks_its_input():
    with pytest.raises(ValueError, match="unique"):
        sklearn_kfold(["a", "a", "b"], 2, 0)
    with pytest.raises(ValueError, match="n_folds"):
        sklearn_kfold(["a", "b"], 3, 0)
    with pytest.raises(ValueError, match="strata"):
        sklearn_stratified_kfold(["a", "b"], [0], 2, 0)
