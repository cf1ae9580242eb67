"""RSNA cervical spine datalist: items, segmentations, skipped entries with reasons, label classes, CV folds
(the reference's stage-1 seg_folds.csv reproduced exactly)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from data.rsna_cervical import (
    classification_folds,
    fold_items,
    load_rsna_cervical_datalist,
    load_rsna_cervical_test_datalist,
    read_segmentation,
    segmentation_folds,
)
from data.splits import sklearn_stratified_kfold

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


UID_ROOT = "1.2.826.0.1.3680043"
# seg_folds.csv of selimsef/rsna_cervical_fracture: fold -> last UID component of its studies
REFERENCE_SEG_FOLDS = {
    0: [10921, 18906, 20647, 20928, 2243, 24617, 27292, 32370, 32658, 5782, 5783],
    1: [11988, 12292, 14267, 1480, 1542, 1573, 18480, 26492, 29425, 30067, 5002],
    2: [18968, 19021, 20120, 30487, 30640, 32590, 3376, 6078, 6125, 6376, 9926],
    3: [12281, 18935, 19333, 24606, 25833, 26498, 26898, 28665, 32071, 8024, 8574],
    4: [17960, 21321, 24891, 25704, 26740, 26979, 28327, 30565, 5671, 8330, 8744],
    5: [10633, 11827, 12833, 15206, 17481, 26442, 30524, 3168, 32280, 32434, 3992],
    6: [1363, 16092, 16919, 1868, 23904, 24140, 28025, 32436, 3882, 4769, 8884],
    7: [19388, 21651, 26068, 26110, 26990, 27016, 27752, 31077, 4202, 780],
}


def test_segmentation_folds_reproduce_the_reference_split():
    expected = [sorted(f"{UID_ROOT}.{n}" for n in REFERENCE_SEG_FOLDS[k]) for k in range(8)]
    studies = [uid for fold in expected for uid in fold]
    items = [
        {"study": uid, "image": f"train_images/{uid}", "segmentation": f"segmentations/{uid}.nii"}
        for uid in reversed(studies)
    ]
    items.append({"study": f"{UID_ROOT}.1", "image": "train_images/x"})  # not segmented: in no stage-1 fold
    assert segmentation_folds(items) == expected
    train, val = fold_items(items, expected, 1)  # the reference trains fold 1
    assert {i["study"] for i in val} == set(expected[1])
    assert len(train) == 87 - 11 and not {i["study"] for i in train} & set(expected[1])


def _write_train_csv(path, n):
    rows = ["StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7"]
    for i in range(n):
        fractured = int(i % 3 == 0)
        rows.append(f"{UID_ROOT}.{100 + i},{fractured},{fractured},0,0,0,0,0,0")
    path.write_text("\n".join(rows) + "\n")


def test_classification_folds_are_sklearn_stratified_and_balanced(tmp_path):
    csv = tmp_path / "train.csv"
    _write_train_csv(csv, 80)
    folds = classification_folds(csv)
    assert folds == classification_folds(csv)  # deterministic
    assert len(folds) == 8 and sorted(s for f in folds for s in f) == sorted(f"{UID_ROOT}.{100 + i}" for i in range(80))
    positives = [sum(int(s.rsplit(".", 1)[1]) % 3 == 1 for s in f) for f in folds]  # i % 3 == 0 <=> 100 + i % 3 == 1
    assert max(positives) - min(positives) <= 1
    ids = [f"{UID_ROOT}.{100 + i}" for i in range(80)]
    assert folds == sklearn_stratified_kfold(ids, [int(i % 3 == 0) for i in range(80)], 8, 777)
    assert folds != classification_folds(csv, seed=778)


def test_stage2_items_take_the_stage1_maps_per_study_or_per_vertebra(tmp_path):
    import json as _json

    from data.rsna_cervical import label_prevalence, with_vertebra_maps

    items = [{"study": s, "image": f"/x/{s}", "label": [0] * 8} for s in ("a", "b", "c")]
    for study, voxels in (("a", {"1": 900, "2": 10}), ("b", {"3": 5})):
        (tmp_path / f"{study}_vertebrae.nii.gz").write_bytes(b"")
        (tmp_path / f"{study}_vertebrae.json").write_text(_json.dumps({"voxels": voxels}))
    studies = with_vertebra_maps(items, tmp_path)
    assert [i["study"] for i in studies] == ["a", "b"] and studies[0]["vertebrae"].endswith("a_vertebrae.nii.gz")
    crops = with_vertebra_maps(items, tmp_path, per_vertebra=True, min_voxels=8)
    assert [(i["study"], i["vertebra"]) for i in crops] == [("a", 1), ("a", 2)]
    with pytest.raises(ValueError, match="stage 1"):
        with_vertebra_maps(items[2:], tmp_path)
    csv = tmp_path / "train.csv"
    csv.write_text("StudyInstanceUID,patient_overall,C1,C2,C3,C4,C5,C6,C7\na,1,0,1,0,0,0,0,0\nb,0,0,0,0,0,0,0,0\n")
    assert label_prevalence(csv) == [0.5, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]
