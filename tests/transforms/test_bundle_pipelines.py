"""The transform pipelines listed in the bundles' configs: pinned outputs, data contracts, image/mask alignment.

The fixture ``fixtures/pinned_training_pipelines.npz`` holds what the carotid (labelled + Mean Teacher strong
augmentation) and angioma (DA / EDA) pipelines gave for the inputs of ``pipeline_inputs.py`` and the seeds below,
computed with the Python pipeline builders these configs replaced. Same transforms in the same order give the same
random draws (``Compose.set_random_state`` seeds each randomizable transform in turn), so the outputs are equal.
The carotid entries were recomputed when the gamma step became exactly ``x ** gamma`` (``transforms.intensity.
RandGammad``) and the strong noise sigma U(0.01, 0.04) (``RandGaussianNoiseStdRanged``), as MAGNET's: the same
draws in the same order, only the values of those two steps changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, Invertd
from PIL import Image

from formats.errors import CaseReadError
from tests.transforms.pipeline_inputs import ANGIOMA_SIZE, CAROTID_SIZE, write_angioma_case, write_carotid_case
from formats.h5 import write_h5_atomic
from formats.png import fit_mask_to_image, save_png_atomic

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
PINNED = np.load(Path(__file__).parent / "fixtures" / "pinned_training_pipelines.npz")

SIZE = 48  # stored side of the carotid test case
IMAGE_SIZE = CAROTID_SIZE  # carotid pipeline output side
ANGIOMA_TEST_SIZE = 64  # angioma pipeline output side
ANGIOMA_SHAPE = (1, ANGIOMA_TEST_SIZE, ANGIOMA_TEST_SIZE)
NO_INTENSITY = dict(brightness_contrast_prob=0, gamma_prob=0, noise_prob=0, blur_prob=0, cutout_prob=0)
NO_GEOMETRY = dict(flip_prob=0, affine_prob=0, crop_prob=0, elastic_prob=0, grid_distortion_prob=0)

#: the probabilities of the carotid recipe; "everything" sets them all to 1
ALL_LABELLED = (
    "flip_prob", "affine_prob", "crop_prob", "elastic_prob", "grid_distortion_prob", "brightness_contrast_prob",
    "gamma_prob", "noise_prob", "blur_prob", "cutout_prob",
)  # fmt: skip
ALL_STRONG = (
    "strong_brightness_contrast_prob", "strong_gamma_prob", "strong_noise_prob", "strong_blur_prob",
    "strong_cutout_prob",
)  # fmt: skip
#: name -> (every probability 1, seed)
CAROTID_TRAIN = {"carotid_train_0": (False, 0), "carotid_train_1": (False, 1), "carotid_train_all": (True, 5)}
CAROTID_STRONG = {"carotid_strong_0": (False, 0), "carotid_strong_1": (False, 1), "carotid_strong_all": (True, 2)}
#: name -> (use_da, use_eda, seed)
ANGIOMA = {
    "angioma_0": (True, True, 0),
    "angioma_1": (True, True, 1),
    "angioma_da": (True, False, 0),
    "angioma_eda": (False, True, 1),
}


def _parser(bundle: str, *configs: str, **overrides: object) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / bundle / "configs" / name) for name in configs])
    for key, value in overrides.items():
        parser[key] = value
    return parser


def _carotid_parser(image_size: int = CAROTID_SIZE, **overrides: object) -> ConfigParser:
    return _parser("carotid_plaque_ultrasound", "train.json", "mean_teacher.json", image_size=image_size, **overrides)


def _carotid(section: str, **overrides: object) -> Compose:
    """``train``, ``validate`` or ``unlabelled`` (Mean Teacher) preprocessing of the carotid bundle."""
    return _carotid_parser(**overrides).get_parsed_content(f"{section}#preprocessing")


def _carotid_unlabelled(**overrides: object) -> Compose:
    return _carotid("unlabelled", **overrides)


def _carotid_inference() -> Compose:
    return _parser("carotid_plaque_ultrasound", "inference.json", image_size=CAROTID_SIZE).get_parsed_content(
        "preprocessing"
    )


def _angioma(section: str, **overrides: object) -> Compose:
    """``train`` or ``validate`` preprocessing of the angioma bundle."""
    parser = _parser("angioma_ultrasound_segmentation", "train.json", image_size=ANGIOMA_TEST_SIZE, **overrides)
    return parser.get_parsed_content(f"{section}#preprocessing")


def _angioma_inference() -> Compose:
    parser = _parser("angioma_ultrasound_segmentation", "inference.json", image_size=ANGIOMA_TEST_SIZE)
    return parser.get_parsed_content("preprocessing")


def _assert_pinned(name: str, key: str, value: torch.Tensor) -> None:
    expected = PINNED[f"{name}_{key}"]
    actual = torch.as_tensor(value).detach().cpu().numpy()
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual.astype(expected.dtype), expected)


@pytest.fixture(scope="module")
def carotid_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_carotid_case(tmp_path_factory.mktemp("carotid"))


@pytest.fixture(scope="module")
def angioma_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_angioma_case(tmp_path_factory.mktemp("angioma"))


@pytest.mark.parametrize("name", sorted(CAROTID_TRAIN))
def test_carotid_labelled_pipeline_is_pinned(carotid_case: dict, name: str) -> None:
    everything, seed = CAROTID_TRAIN[name]
    probabilities = {key: 1.0 for key in ALL_LABELLED} if everything else {}
    parser = _parser("carotid_plaque_ultrasound", "train.json", image_size=CAROTID_SIZE, **probabilities)
    out = parser.get_parsed_content("train#preprocessing").set_random_state(seed)(dict(carotid_case))
    _assert_pinned(name, "image", out["image"])
    _assert_pinned(name, "label", out["label"])


@pytest.mark.parametrize("name", sorted(CAROTID_STRONG))
def test_carotid_strong_augmentation_is_pinned(carotid_case: dict, name: str) -> None:
    everything, seed = CAROTID_STRONG[name]
    probabilities = {key: 1.0 for key in ALL_STRONG} if everything else {}
    parser = _parser(
        "carotid_plaque_ultrasound", "train.json", "mean_teacher.json", image_size=CAROTID_SIZE, **probabilities
    )
    item = {"case": carotid_case["case"], "image": carotid_case["image"]}
    out = parser.get_parsed_content("unlabelled#preprocessing").set_random_state(seed)(item)
    assert set(out) == {"case", "image", "image_strong"}
    _assert_pinned("carotid_strong", "image", out["image"])  # the teacher's input: not augmented
    _assert_pinned(name, "image_strong", out["image_strong"])


@pytest.mark.parametrize("name", sorted(ANGIOMA))
def test_angioma_pipeline_is_pinned(angioma_case: dict, name: str) -> None:
    use_da, use_eda, seed = ANGIOMA[name]
    parser = _parser(
        "angioma_ultrasound_segmentation", "train.json", image_size=ANGIOMA_SIZE, use_da=use_da, use_eda=use_eda
    )
    # pinned before the input resize was anti-aliased: the pins check the random draws, the resize is checked below
    parser["train#deterministic_transforms#2#anti_aliasing"] = False
    out = parser.get_parsed_content("train#preprocessing").set_random_state(seed)(dict(angioma_case))
    _assert_pinned(name, "image", out["image"])
    _assert_pinned(name, "label", out["label"])


# ----------------------------------------------------------------------------------------------- carotid


def _masks() -> tuple[np.ndarray, np.ndarray]:
    """Stored masks: a vessel band with a plaque in the left half (long), a vessel disc with a plaque on
    its right side (trans): both asymmetric so that a flip is visible."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    long_mask = np.zeros((SIZE, SIZE), np.uint8)
    long_mask[18:30] = 255
    long_mask[24:30, 6:20] = 128
    trans_mask = np.zeros((SIZE, SIZE), np.uint8)
    trans_mask[np.hypot(y - 24, x - 22) < 11] = 255
    trans_mask[(np.hypot(y - 24, x - 22) < 11) & (x > 27)] = 128
    return long_mask, trans_mask


@pytest.fixture
def case(tmp_path: Path) -> dict[str, str]:
    """One stored case whose images encode the masks (background 0, plaque 127, vessel 254)."""
    long_mask, trans_mask = _masks()
    codes = {0: 0, 128: 127, 255: 254}
    views = {"long": long_mask, "trans": trans_mask}
    images = {f"{v}_img": np.vectorize(codes.get)(m).astype(np.uint8) for v, m in views.items()}
    write_h5_atomic(tmp_path / "images" / "0003.h5", images)
    write_h5_atomic(
        tmp_path / "labels" / "0003_label.h5", {"long_mask": long_mask, "trans_mask": trans_mask, "cls": np.uint8(1)}
    )
    return {
        "case": "0003",
        "image": str(tmp_path / "images" / "0003.h5"),
        "label": str(tmp_path / "labels" / "0003_label.h5"),
    }


def _check_labelled_contract(out: dict) -> None:
    assert out["case"] == "0003"
    assert out["image"].shape == (2, IMAGE_SIZE, IMAGE_SIZE) and out["image"].dtype == torch.float32
    assert 0 <= out["image"].min() and out["image"].max() <= 1
    assert out["label"].shape == (2, IMAGE_SIZE, IMAGE_SIZE) and out["label"].dtype == torch.int64
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2}
    assert out["cls"].shape == (1,) and out["cls"].dtype == torch.float32 and out["cls"].item() == 1


def test_load_scales_images_and_maps_label_codes(case: dict) -> None:
    out = Compose(_carotid_parser(SIZE).get_parsed_content("train#deterministic_transforms"))(dict(case))
    assert out["long_img"].shape == (1, SIZE, SIZE)
    assert out["long_img"].max().item() == pytest.approx(254 / 255)
    long_mask, _ = _masks()
    expected = np.select([long_mask == 128, long_mask == 255], [1, 2], 0)
    np.testing.assert_array_equal(out["long_mask"][0].numpy(), expected)
    assert out["cls"].tolist() == [1.0]
    assert "long_mask" not in _carotid_inference()({"case": "0003", "image": case["image"]})


def test_bad_mask_code_names_the_label_file(case: dict) -> None:
    long_mask, trans_mask = _masks()
    long_mask[0, 0] = 1
    write_h5_atomic(case["label"], {"long_mask": long_mask, "trans_mask": trans_mask, "cls": np.uint8(1)})
    with pytest.raises(RuntimeError) as error:  # MONAI's Compose chains the reader's error as the cause
        _carotid("validate")(dict(case))
    cause = error.value.__cause__
    assert isinstance(cause, CaseReadError) and cause.path == case["label"]
    assert "0003_label.h5: 'long_mask' has label values 1 outside" in str(cause)


def test_val_contract_keeps_resized_views_with_disk_shape(case: dict) -> None:
    out = _carotid("validate")(dict(case))
    _check_labelled_contract(out)
    assert "long_mask" not in out and tuple(out["long_img"].meta["spatial_shape"]) == (SIZE, SIZE)
    torch.testing.assert_close(out["image"][1:], out["trans_img"].as_tensor())
    assert set(torch.unique(out["label"][0]).tolist()) == {0, 1, 2}
    unlabelled = _carotid_inference()({"case": "0003", "image": case["image"]})
    assert unlabelled["image"].shape == (2, IMAGE_SIZE, IMAGE_SIZE) and "label" not in unlabelled


def test_train_contract_and_determinism(case: dict) -> None:
    first = _carotid("train").set_random_state(3)(dict(case))
    _check_labelled_contract(first)
    assert "long_img" not in first and "long_mask" not in first
    again = _carotid("train").set_random_state(3)(dict(case))
    torch.testing.assert_close(first["image"].as_tensor(), again["image"].as_tensor())


def _foreground_dice(image: torch.Tensor, label: torch.Tensor) -> float:
    """Dice of the encoded foreground of the images (> 0.25, bilinear) and of the masks (nearest)."""
    a, b = image.as_tensor() > 0.25, label.as_tensor() > 0
    return (2 * (a & b).sum() / (a.sum() + b.sum())).item()


@pytest.mark.parametrize("seed", range(4))
def test_masks_stay_aligned_under_all_geometric_augmentations(case: dict, seed: int) -> None:
    geometry = dict(flip_prob=1, affine_prob=1, crop_prob=1, elastic_prob=1, grid_distortion_prob=1)
    out = _carotid("train", **geometry, **NO_INTENSITY).set_random_state(seed)(dict(case))
    other = _carotid("train", **geometry, **NO_INTENSITY).set_random_state(seed + 100)(dict(case))
    untouched = _carotid("validate")(dict(case))
    assert not torch.equal(out["label"].as_tensor(), untouched["label"].as_tensor())  # it did move
    # the images encode the masks: they agree up to interpolated edges, unlike another draw's mask
    assert _foreground_dice(out["image"], out["label"]) > 0.9
    assert _foreground_dice(out["image"], other["label"]) < 0.85


def test_flip_moves_image_and_mask_together(case: dict) -> None:
    out = _carotid("train", **{**NO_GEOMETRY, "flip_prob": 1}, **NO_INTENSITY)(dict(case))
    reference = _carotid("validate")(dict(case))
    torch.testing.assert_close(out["label"].as_tensor(), reference["label"].as_tensor().flip(-1))
    torch.testing.assert_close(out["image"].as_tensor(), reference["image"].as_tensor().flip(-1))


def test_views_are_randomised_independently(case: dict) -> None:
    reference = _carotid("validate")(dict(case))["label"].as_tensor()
    transform = _carotid("train", **{**NO_GEOMETRY, "flip_prob": 0.5}, **NO_INTENSITY)
    outcomes = set()
    for seed in range(16):
        label = transform.set_random_state(seed)(dict(case))["label"].as_tensor()
        outcomes.add(tuple(bool(torch.equal(label[v], reference[v].flip(-1))) for v in range(2)))
    assert {(True, False), (False, True)} <= outcomes


def test_intensity_augmentation_leaves_the_mask_alone(case: dict) -> None:
    intensity = dict(brightness_contrast_prob=1, gamma_prob=1, noise_prob=1, blur_prob=1, cutout_prob=1)
    out = _carotid("train", **NO_GEOMETRY, **intensity).set_random_state(0)(dict(case))
    reference = _carotid("validate")(dict(case))
    torch.testing.assert_close(out["label"].as_tensor(), reference["label"].as_tensor())
    assert not torch.allclose(out["image"].as_tensor(), reference["image"].as_tensor())
    assert 0 <= out["image"].min() and out["image"].max() <= 1


@pytest.mark.parametrize("seed", range(3))
def test_strong_augmentation_is_pixel_aligned(case: dict, seed: int) -> None:
    item = {"case": "0003", "image": case["image"]}
    out = _carotid_unlabelled(strong_cutout_prob=0).set_random_state(seed)(item)
    weak = _carotid_inference()(dict(item))["image"].as_tensor()
    assert set(out) == {"case", "image", "image_strong"}
    torch.testing.assert_close(out["image"].as_tensor(), weak)  # teacher input: resized, unaugmented
    strong = out["image_strong"].as_tensor()
    assert strong.shape == (2, IMAGE_SIZE, IMAGE_SIZE) and 0 <= strong.min() and strong.max() <= 1
    for view in range(2):
        vessel, background = weak[view] > 0.9, weak[view] < 0.1
        # the bright vessel stays where it was: much brighter than the background in the strong view
        assert strong[view][vessel].mean() > strong[view][background].mean() + 0.3


def test_batches_collate_to_the_contract(case: dict) -> None:
    labelled = DataLoader(Dataset([dict(case), dict(case)], _carotid("train")), batch_size=2)
    batch = next(iter(labelled))
    assert batch["image"].shape == batch["label"].shape == (2, 2, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["cls"].shape == (2, 1) and batch["case"] == ["0003", "0003"]
    pool = [{"case": "0003", "image": case["image"]}] * 2
    batch = next(iter(DataLoader(Dataset(pool, _carotid_unlabelled()), batch_size=2)))
    assert batch["image"].shape == batch["image_strong"].shape == (2, 2, IMAGE_SIZE, IMAGE_SIZE)


# ----------------------------------------------------------------------------------------------- angioma


@pytest.fixture(scope="module")
def real_items(real_samples):
    root = real_samples / "angioma_ccf_bdci" / "train_data"
    return [{"case": c, "image": root / "img" / f"{c}.png", "label": root / "label" / f"{c}.png"} for c in "145"]


@pytest.fixture
def self_labelled(tmp_path):
    """An item whose image IS its mask (x255), a few px off in size: any geometric mismatch shows."""
    rows, cols = np.mgrid[0:90, 0:140]
    mask = ((rows - 40) ** 2 / 30**2 + (cols - 60) ** 2 / 45**2 < 1) | ((rows > 60) & (cols > 110))
    image = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(image, mode="RGB").save(tmp_path / "img.png")
    save_png_atomic(tmp_path / "label.png", fit_mask_to_image(mask.astype(np.uint8), (88, 142), "m", 1.0) * 255)
    return {"image": tmp_path / "img.png", "label": tmp_path / "label.png"}


def test_train_pipeline_on_real_images_gives_unit_range_images_and_binary_masks(real_items):
    transform = _angioma("train")
    transform.set_random_state(0)
    for _ in range(2):
        for item in real_items:
            out = transform(item)
            assert type(out["image"]) is torch.Tensor and out["image"].shape == ANGIOMA_SHAPE
            assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
            assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}
    batch = next(iter(DataLoader(Dataset(real_items, transform), batch_size=3)))
    assert batch["image"].shape == batch["label"].shape == (3, *ANGIOMA_SHAPE)


def test_pipeline_is_deterministic_for_a_seed(real_items):
    first, again = _angioma("train"), _angioma("train")
    first.set_random_state(7)
    again.set_random_state(7)
    for item in real_items:
        a, b = first(item), again(item)
        torch.testing.assert_close(a["image"], b["image"])
        torch.testing.assert_close(a["label"], b["label"])


@pytest.mark.parametrize("use_eda", [False, True])
def test_geometric_augmentation_moves_image_and_mask_together(self_labelled, use_eda):
    transform = _angioma("train", use_da=True, use_eda=use_eda)
    transform.set_random_state(3)
    ious = []
    for _ in range(12):
        out = transform(self_labelled)
        image, label = out["image"][0] > 0.5, out["label"][0] > 0.5
        union = (image | label).sum().item()
        ious.append((image & label).sum().item() / union if union else 1.0)
    # interpolation (bilinear image vs nearest mask) and intensity ops (blur, dropout, noise) cost a little at edges
    assert np.median(ious) > (0.92 if not use_eda else 0.85) and min(ious) > 0.6


def test_without_augmentation_train_equals_validation_but_for_the_image_interpolation(real_items):
    train = _angioma("train", use_da=False, use_eda=False)(real_items[0])
    val = _angioma("validate")(real_items[0])
    torch.testing.assert_close(train["label"], val["label"])
    # the seed's Train_Dataset resizes with PIL bicubic, its Valid_Dataset with PIL bilinear
    assert 0 < float((train["image"] - val["image"]).abs().mean()) < 0.01
    assert 0.5 < float(val["image"].max()) <= 1.0


@pytest.fixture
def noise_png(tmp_path):
    """A grey RGB PNG of the challenge's size full of 1-px detail: a downsizing without anti-aliasing aliases it."""
    pixels = np.random.default_rng(0).integers(0, 256, (300, 470), dtype=np.uint8)
    Image.fromarray(np.repeat(pixels[..., None], 3, axis=-1), mode="RGB").save(tmp_path / "noise.png")
    return tmp_path / "noise.png", Image.fromarray(pixels)


@pytest.mark.parametrize(
    "section, pil_filter",
    [
        ("train", Image.Resampling.BICUBIC),
        ("validate", Image.Resampling.BILINEAR),
        ("inference", Image.Resampling.BILINEAR),
    ],
)
def test_input_downsizing_is_anti_aliased_as_the_seeds_pil_resize(noise_png, section, pil_filter):
    """The seed resizes PIL images (an area-weighted, anti-aliased filter): bicubic in training, bilinear for
    validation and test; MONAI's ``anti_aliasing`` (a Gaussian pre-filter) comes close, a plain interpolation
    does not (mean difference 28-32 grey levels here)."""
    path, pil = noise_png
    size = 256
    inference = section == "inference"
    config, key = ("inference.json", "preprocessing") if inference else ("train.json", f"{section}#preprocessing")
    parser = _parser("angioma_ultrasound_segmentation", config, image_size=size, use_da=False, use_eda=False)
    transform = parser.get_parsed_content(key)
    mask = path.with_name("mask.png")
    save_png_atomic(mask, np.zeros((300, 470), np.uint8))
    item = {"image": path} if inference else {"image": path, "label": mask}
    ours = np.asarray(transform(item)["image"])[0] * 255.0
    seed = np.asarray(pil.resize((size, size), pil_filter), dtype=np.float32)
    assert np.abs(ours - seed).mean() < 16.0


def test_probabilities_are_resized_back_bilinearly(real_items):
    """The seed resizes each probability map back with torchvision's ``Resize`` on a tensor: bilinear, half-pixel
    aligned (``align_corners=False``)."""
    parser = _parser("angioma_ultrasound_segmentation", "inference.json", image_size=ANGIOMA_TEST_SIZE)
    data = parser.get_parsed_content("preprocessing")({"image": real_items[1]["image"]})
    probabilities = torch.rand(1, ANGIOMA_TEST_SIZE, ANGIOMA_TEST_SIZE, generator=torch.Generator().manual_seed(0))
    restored = parser.get_parsed_content("restore")({**data, "pred": probabilities})["pred"]
    expected = torch.nn.functional.interpolate(probabilities[None], size=(285, 451), mode="bilinear")[0]
    torch.testing.assert_close(torch.as_tensor(restored), expected, atol=1e-5, rtol=0)


def test_inference_transforms_keep_what_is_needed_to_resize_back(real_items):
    transform = _angioma_inference()
    data = transform({"image": real_items[1]["image"]})
    assert data["image"].shape == ANGIOMA_SHAPE and tuple(data["image"].meta["spatial_shape"]) == (285, 451)
    data["pred"] = (data["image"] > 0.3).float()
    restored = Invertd("pred", transform=transform, orig_keys="image", nearest_interp=True)(data)["pred"]
    assert restored.shape == (1, 285, 451)
