"""Synthetic CSV 2026 demo data: exact layout and dtypes, determinism, and a visible risk class."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from data.synthetic import available_generators
from data.synthetic.carotid_plaque_ultrasound import generate

SIZE = 64


def _read(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("carotid_demo")
    generate(root, cases=12, seed=3, size=SIZE, unlabelled_fraction=1 / 3)  # 8 labelled, 4 unlabelled
    return root


def test_layout_keys_dtypes_and_values(demo: Path) -> None:
    assert sorted(p.name for p in demo.iterdir()) == ["images", "labels", "train.txt"]
    names = [f"{k:04d}" for k in range(12)]
    assert sorted(p.stem for p in (demo / "images").iterdir()) == names
    assert sorted(p.name for p in (demo / "labels").iterdir()) == [f"{n}_label.h5" for n in names[:8]]
    assert (demo / "train.txt").read_text().split() == [f"{n}.h5" for n in names]
    classes = []
    for name in names[:8]:
        image = _read(demo / "images" / f"{name}.h5")
        label = _read(demo / "labels" / f"{name}_label.h5")
        assert sorted(image) == ["long_img", "trans_img"] and sorted(label) == ["cls", "long_mask", "trans_mask"]
        for view in ("long", "trans"):
            img, mask = image[f"{view}_img"], label[f"{view}_mask"]
            assert img.shape == mask.shape == (SIZE, SIZE) and img.dtype == mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 128, 255}  # every view shows vessel and plaque
            assert not img[0].any() and not img[-1].any()  # letterbox bands
            assert img[SIZE // 2 :, : SIZE // 2].max() == 255  # watermark in the lower left
        assert label["cls"].shape == () and label["cls"].dtype == np.uint8
        classes.append(int(label["cls"]))
    assert sorted(classes) == [0] * 4 + [1] * 4


def test_deterministic_for_a_seed(demo: Path, tmp_path: Path) -> None:
    generate(tmp_path / "same", cases=12, seed=3, size=SIZE, unlabelled_fraction=1 / 3)
    generate(tmp_path / "other", cases=12, seed=4, size=SIZE, unlabelled_fraction=1 / 3)
    for name in ("images/0000.h5", "labels/0001_label.h5", "images/0011.h5", "train.txt"):
        if name.endswith(".txt"):
            assert (tmp_path / "same" / name).read_text() == (demo / name).read_text()
            continue
        same, reference = _read(tmp_path / "same" / name), _read(demo / name)
        assert sorted(same) == sorted(reference) and all(np.array_equal(same[k], reference[k]) for k in same)
    other, reference = _read(tmp_path / "other" / "images/0000.h5"), _read(demo / "images/0000.h5")
    assert not np.array_equal(other["long_img"], reference["long_img"])


def test_risk_class_is_visible(tmp_path: Path) -> None:
    generate(tmp_path, cases=16, seed=0, size=128, unlabelled_fraction=0)
    echo, area = {0: [], 1: []}, {0: [], 1: []}
    for k in range(16):
        image, label = _read(tmp_path / "images" / f"{k:04d}.h5"), _read(tmp_path / "labels" / f"{k:04d}_label.h5")
        plaque = label["long_mask"] == 128
        echo[int(label["cls"])].append(image["long_img"][plaque].mean())
        area[int(label["cls"])].append(plaque.sum() / (label["long_mask"] > 0).sum())
    assert max(echo[1]) < min(echo[0])  # high risk: hypoechoic; low risk: echogenic
    assert np.mean(area[1]) > 1.5 * np.mean(area[0])  # high risk: larger


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cases"):
        generate(tmp_path, cases=0, seed=0)
    with pytest.raises(ValueError, match="unlabelled_fraction"):
        generate(tmp_path, cases=2, seed=0, unlabelled_fraction=1.5)


def test_generator_is_discovered() -> None:
    assert "carotid_plaque_ultrasound" in available_generators()
