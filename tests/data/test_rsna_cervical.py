"""RSNA cervical spine datalist: items, segmentations, skipped entries with reasons, label classes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from data.rsna_cervical import load_rsna_cervical_datalist, load_rsna_cervical_test_datalist, read_segmentation

HEADER = "StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7\n"


def _study(root, split, uid, files=1):
    folder = root / split / uid
    folder.mkdir(parents=True)
    for n in range(1, files + 1):
        (folder / f"{n}.dcm").write_bytes(b"")
    return folder


def test_items_and_skipped_entries(tmp_path):
    for uid in ("1.1", "1.2", "1.3", "1.4", "1.6"):
        _study(tmp_path, "train_images", uid)
    _study(tmp_path, "train_images", "1.7", files=0)
    (tmp_path / "train.csv").write_text(
        HEADER
        + "1.1,1,0,1,0,0,0,0,0\n"
        + "1.2,0,0,0,0,0,0,0,0\n"
        + "1.2,1,1,0,0,0,0,0,0\n"  # duplicate
        + "1.3,1,0,0,0,0,0,0,0\n"  # overall without a vertebra
        + "1.4,0,0,2,0,0,0,0,0\n"  # not 0/1
        + "1.5,0,0,0,0,0,0,0,0\n"  # no images
    )
    (tmp_path / "segmentations").mkdir()
    for uid in ("1.1", "9.9"):
        (tmp_path / "segmentations" / f"{uid}.nii").write_bytes(b"")
    items, skipped = load_rsna_cervical_datalist(tmp_path)
    assert [i["study"] for i in items] == ["1.1", "1.2"]
    assert items[0]["label"] == [1, 0, 1, 0, 0, 0, 0, 0] and items[0]["segmentation"].endswith("1.1.nii")
    assert "segmentation" not in items[1]
    reasons = " | ".join(f"{s['entry']}: {s['reason']}" for s in skipped)
    for expected in ("listed twice", "disagrees with C1-C7", "must be 0 or 1", "1.5: no series folder",
                     "9.9.nii: label map without a study", "1.7: no .dcm files", "1.6: no usable row"):
        assert expected in reasons, reasons
    assert len(skipped) == 9  # the folders of the two rejected rows are reported too


def test_missing_layout_and_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_images"):
        load_rsna_cervical_datalist(tmp_path)
    _study(tmp_path, "train_images", "1.1")
    (tmp_path / "train.csv").write_text("StudyInstanceUID,patient_overall\n1.1,0\n")
    with pytest.raises(ValueError, match=r"columns \['C1'"):
        load_rsna_cervical_datalist(tmp_path)
    _study(tmp_path, "test_images", "2.1")
    assert load_rsna_cervical_test_datalist(tmp_path)[0] == [{"study": "2.1", "image": str(tmp_path / "test_images" / "2.1")}]


def test_segmentation_keeps_c1_to_c7_only(tmp_path):
    labels = np.arange(10, dtype=np.uint8).reshape(10, 1, 1).repeat(2, axis=1).repeat(2, axis=2)
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "s.nii")
    out = read_segmentation(tmp_path / "s.nii", np.eye(4), labels.shape)
    assert np.array_equal(out[:, 0, 0], [0, 1, 2, 3, 4, 5, 6, 7, 0, 0])
