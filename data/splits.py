"""Cross-validation splits that keep a stratum (a class, a lesion-size tertile) balanced across folds.

:func:`stratified_kfold` is this project's own dealing scheme; :func:`sklearn_kfold` and
:func:`sklearn_stratified_kfold` reproduce scikit-learn's shuffled ``KFold`` / ``StratifiedKFold`` fold for fold,
for recipes whose reference split was made with them (the RSNA cervical spine folds, seed 777).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold


def _check_ids(ids: Sequence[str], n_folds: int) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if not 2 <= n_folds <= len(ids):
        raise ValueError(f"n_folds must be between 2 and the number of ids ({len(ids)}), got {n_folds}")


def case_sort_key(case: str) -> tuple[int, int, str]:
    """Sort key of case names: numbers numerically (``"2"`` before ``"10"``), then other names alphabetically."""
    return (0, int(case), case) if case.isdigit() else (1, 0, case)


def stratified_kfold(ids: Sequence[str], strata: Sequence[Hashable], n_folds: int, seed: int = 0) -> list[list[str]]:
    """Split ``ids`` into ``n_folds`` disjoint validation folds, each stratum spread evenly over the folds.

    Within each stratum the ids are shuffled with ``seed`` and dealt into ``n_folds`` parts; fold ``k`` is the
    union of the k-th parts of all strata (the CCF BDCI size-stratified and the CSV 2026 class-balanced splits).

    Returns:
        the validation ids of each fold, sorted; their union is ``ids``.
    """
    if len(ids) != len(strata):
        raise ValueError(f"got {len(ids)} ids but {len(strata)} strata")
    _check_ids(ids, n_folds)
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    offset = 0
    for stratum in sorted(set(strata), key=str):
        members = sorted(i for i, s in zip(ids, strata) if s == stratum)
        rng.shuffle(members)
        for position, item in enumerate(members):
            # continue dealing where the previous stratum stopped so that fold sizes stay within one of each other
            folds[(offset + position) % n_folds].append(item)
        offset += len(members)
    return [sorted(fold) for fold in folds]


def sklearn_kfold(ids: Sequence[str], n_folds: int, seed: int) -> list[list[str]]:
    """Validation ids of each fold of ``sklearn.model_selection.KFold(n_folds, shuffle=True, random_state=seed)``.

    The folds depend on the ORDER of ``ids`` (KFold shuffles positions), so pass them in the order the
    reference split them. Returns the ids of each fold sorted.
    """
    _check_ids(ids, n_folds)
    splitter = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [sorted(ids[i] for i in test) for _, test in splitter.split(np.zeros(len(ids)))]


def sklearn_stratified_kfold(
    ids: Sequence[str], strata: Sequence[Hashable], n_folds: int, seed: int
) -> list[list[str]]:
    """Validation ids of each fold of ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)`` on ``strata``.

    Order-dependent like :func:`sklearn_kfold`; every stratum needs at least ``n_folds`` members (sklearn warns
    otherwise and deals what there is). Returns the ids of each fold sorted.
    """
    if len(ids) != len(strata):
        raise ValueError(f"got {len(ids)} ids but {len(strata)} strata")
    _check_ids(ids, n_folds)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    codes = np.unique([str(s) for s in strata], return_inverse=True)[1]
    return [sorted(ids[i] for i in test) for _, test in splitter.split(np.zeros(len(ids)), codes)]


def quantile_strata(values: Sequence[float], n_groups: int = 3) -> list[int]:
    """Group index (0..n_groups-1) of each value by the data's own quantiles (tertiles for ``n_groups=3``).

    The thresholds are the values at 1/n, 2/n, ... of the sorted data, as the CCF BDCI rank-1 solution
    computes its lesion-size tertiles.
    """
    if len(values) < n_groups:
        raise ValueError(f"need at least {n_groups} values to form {n_groups} groups, got {len(values)}")
    ordered = np.sort(np.asarray(values, dtype=float))
    thresholds = [ordered[int(len(ordered) * k / n_groups)] for k in range(1, n_groups)]
    return [int(np.searchsorted(thresholds, v, side="right")) for v in values]


def train_val_ids(folds: Sequence[Sequence[str]], fold: int) -> tuple[list[str], list[str]]:
    """The training ids (all other folds) and validation ids of ``fold``."""
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold must be in 0..{len(folds) - 1}, got {fold}")
    train = sorted(i for k, f in enumerate(folds) if k != fold for i in f)
    return train, sorted(folds[fold])
