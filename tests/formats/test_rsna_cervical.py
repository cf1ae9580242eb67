"""The RSNA cervical spine submission CSV: per-study rows, the merge, reading back, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from formats.errors import CaseReadError
from formats.rsna_cervical import merge_submission, read_submission, write_study_rows


def test_rows_merge_and_read_back(tmp_path):
    probs = {"1.2.3": np.linspace(0.1, 0.8, 8), "1.2.4": np.full(8, 0.5)}
    for study, p in probs.items():
        write_study_rows(tmp_path / f"{study}_fracture.csv", study, p)
    lines = (tmp_path / "1.2.3_fracture.csv").read_text().splitlines()
    assert lines[0] == "row_id,fractured"
    assert [line.split(",")[0] for line in lines[1:]] == [f"1.2.3_C{i}" for i in range(1, 8)] + ["1.2.3_patient_overall"]
    assert merge_submission(sorted(tmp_path.glob("*_fracture.csv")), tmp_path / "submission.csv") == 2
    back = read_submission(tmp_path / "submission.csv")
    assert set(back) == set(probs)
    for study, p in probs.items():
        np.testing.assert_allclose(back[study], p, atol=1e-6)


def test_bad_probabilities_and_files_are_named(tmp_path):
    with pytest.raises(ValueError, match="1.2.3"):
        write_study_rows(tmp_path / "x.csv", "1.2.3", [0.5] * 7)
    with pytest.raises(ValueError, match="1.2.3"):
        write_study_rows(tmp_path / "x.csv", "1.2.3", [1.5] * 8)
    bad = tmp_path / "bad.csv"
    bad.write_text("row_id,fractured\n1.2.3_C1,0.5\n")
    with pytest.raises(CaseReadError, match="1 of 8 rows"):
        read_submission(bad)
    bad.write_text("row_id,fractured\n1.2.3_C9,0.5\n")
    with pytest.raises(CaseReadError, match="line 2"):
        read_submission(bad)
    with pytest.raises(CaseReadError, match="not a submission"):
        merge_submission([_write(tmp_path / "o.csv", "a,b\n")], tmp_path / "s.csv")


def _write(path, text):
    path.write_text(text)
    return path
