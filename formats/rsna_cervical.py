"""The RSNA 2022 cervical spine fracture submission CSV: ``row_id,fractured``, one row per study and target.

Row ids are ``<StudyInstanceUID>_C1`` .. ``<StudyInstanceUID>_C7`` and ``<StudyInstanceUID>_patient_overall``
(the competition's ``sample_submission.csv``), the value the probability that the target is fractured. Inference
writes one small file per study (atomic, so a killed run leaves whole files only) and
:func:`merge_submission` joins them into the submission.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from formats.errors import CaseReadError
from utils.atomic import write_text_atomic

__all__ = ["SUBMISSION_HEADER", "SUBMISSION_TARGETS", "merge_submission", "read_submission", "write_study_rows"]

SUBMISSION_HEADER = ("row_id", "fractured")
#: the targets in the order of the network's outputs ([patient_overall, C1, ..., C7])
SUBMISSION_TARGETS = ("patient_overall", "C1", "C2", "C3", "C4", "C5", "C6", "C7")
_ROW_ORDER = (1, 2, 3, 4, 5, 6, 7, 0)  # the sample submission lists C1..C7, then patient_overall


def write_study_rows(path: str | os.PathLike, study: str, probabilities: Sequence[float], overwrite: bool = False) -> None:
    """Write one study's 8 rows (``probabilities`` in :data:`SUBMISSION_TARGETS` order) as a CSV with a header."""
    values = np.asarray(probabilities, dtype=np.float64)
    if values.shape != (len(SUBMISSION_TARGETS),) or not ((values >= 0) & (values <= 1)).all():
        raise ValueError(f"{study}: need {len(SUBMISSION_TARGETS)} probabilities in [0, 1], got {values.tolist()}")
    lines = [",".join(SUBMISSION_HEADER)]
    lines += [f"{study}_{SUBMISSION_TARGETS[j]},{values[j]:.6f}" for j in _ROW_ORDER]
    write_text_atomic(path, "\n".join(lines) + "\n", overwrite=overwrite)


def merge_submission(paths: Sequence[str | os.PathLike], output: str | os.PathLike) -> int:
    """Join per-study row files (sorted by study) into one submission CSV; returns the number of studies.

    Raises:
        CaseReadError: a file does not have the submission header.
    """
    lines = [",".join(SUBMISSION_HEADER)]
    for path in sorted(Path(p) for p in paths):
        rows = path.read_text().splitlines()
        if not rows or rows[0].strip() != ",".join(SUBMISSION_HEADER):
            raise CaseReadError(f"{path}: not a submission row file (header {rows[:1]})", path=path)
        lines += [row for row in rows[1:] if row.strip()]
    write_text_atomic(output, "\n".join(lines) + "\n", overwrite=True)
    return len(paths)


def read_submission(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{study: (8,) probabilities in SUBMISSION_TARGETS order}`` of a submission CSV.

    Raises:
        CaseReadError: missing columns, a row id without a known target suffix, a value that is not a probability,
            or a study without all 8 rows (the message names the file and the row).
    """
    path = Path(path)
    studies: dict[str, dict[str, float]] = {}
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != SUBMISSION_HEADER:
            raise CaseReadError(f"{path}: header must be {SUBMISSION_HEADER}, got {reader.fieldnames}", path=path)
        for line, row in enumerate(reader, start=2):
            row_id = row["row_id"]
            target = next((t for t in SUBMISSION_TARGETS if row_id.endswith("_" + t)), None)
            try:
                value = float(row["fractured"])
            except (TypeError, ValueError):
                value = float("nan")
            if target is None or not 0 <= value <= 1:
                raise CaseReadError(f"{path} line {line}: bad row {row}", path=path, key=row_id)
            studies.setdefault(row_id[: -len(target) - 1], {})[target] = value
    result = {}
    for study, values in studies.items():
        if len(values) != len(SUBMISSION_TARGETS):
            raise CaseReadError(f"{path}: study {study} has {len(values)} of {len(SUBMISSION_TARGETS)} rows", path=path)
        result[study] = np.array([values[t] for t in SUBMISSION_TARGETS])
    return result
