"""Per-vertebra crops of a spine CT guided by a vertebra label map, and the visibility rule of their targets.

After the 4th-place RSNA 2022 cervical spine solution (selimsef/rsna_cervical_fracture,
``training/dataset_cls.py``, ``ClassifierDatasetCropsFullRes``; bundle docs
``bundles/cervical_spine_ct_fracture/docs/README.md``). A study is a CT volume ``image`` (1, Z, Yi, Xi) and a
vertebra label map ``label`` (1, Z, Yl, Xl) with the same slices but possibly a coarser grid in plane (the
solution: 512 x 512 image, 256 x 256 predicted label map, both at every second slice). Pipeline of one item:

1. :class:`RandChooseVertebrad` (training): which vertebra to show. Vertebrae with more than ``min_voxels``
   (512) label voxels are eligible (the reference's ``regionprops`` "area", a voxel count); a fractured one is
   chosen with probability ``fractured_prob`` (0.7) when the study has one, else a non-fractured one.
2. :class:`VertebraCropd`: the vertebra's bounding box in the label map, ``margin`` (16) label pixels added in
   plane, mapped onto the image grid; a ``num_slices`` (40) slice window: for a shorter vertebra one window
   holding it (random start in training, centred in validation), for a longer one a random window (training) or
   its first and last ``num_slices`` slices (validation, two crops). Image (bilinear) and label map (nearest,
   first to the image grid as the reference's x2) are resized so that the longer in-plane side is
   ``spatial_size`` (256) and padded to ``spatial_size`` x ``spatial_size`` (centred, zeros); slices beyond the
   volume's end are zeros. It also writes each label's visible fraction (see below).
3. :class:`ZeroHiddenTargetsd` (training): a vertebra's target is zeroed when less than ``threshold`` (30 %) of
   it is in the crop, and ``patient_overall`` becomes "any vertebra positive".
4. MONAI's ``ConcatItemsd(keys=["image", "image", "label"], name="image")``: the 3-channel (image, image, label
   map) input (3, 40, 256, 256) of the classifier.

Visibility (``visible / (total + smooth)``, ``smooth`` = 100 as in the reference):

* ``"label_resolution"`` (default, the intent): ``visible`` = the vertebra's voxels inside the crop window,
  counted in the label map, ``total`` = all its voxels in the label map: both at the same resolution.
* ``"seed"``: the reference's count. ``visible`` is counted on the label crop after its x2 upsampling to the
  image grid and the resize to ``spatial_size`` (and, for a vertebra longer than the window, over its whole
  slice range before the window is chosen, as the reference does in training), while ``total`` stays at label-map
  resolution. The fraction is thus inflated by about ``(2 s) ** 2`` (s = the resize factor to 256), i.e. the
  30 % threshold acts like roughly 7.5 % or less of the true fraction. The reference zeroes targets in training
  only; validation scores study labels.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import convert_to_tensor

__all__ = [
    "VISIBILITY_MODES",
    "ClassifyVertebraed",
    "RandChooseVertebrad",
    "VertebraCropd",
    "ZeroHiddenTargetsd",
    "label_box",
    "slice_windows",
    "vertebra_summary",
]

VISIBILITY_MODES = ("label_resolution", "seed")
CERVICAL_LABELS = tuple(range(1, 8))


def _case(data: Mapping[Hashable, Any]) -> str:
    for key in ("case", "study", "StudyInstanceUID"):
        if key in data:
            return f"case {data[key]}: "
    return ""


def label_box(label: np.ndarray, value: int) -> tuple[int, int, int, int, int, int] | None:
    """Bounding box ``(z1, y1, x1, z2, y2, x2)`` (ends exclusive) of ``label == value`` in a (Z, Y, X) map, or
    None when the value is absent (the reference's ``regionprops`` bbox)."""
    mask = np.asarray(label) == value
    if not mask.any():
        return None
    starts, stops = [], []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        starts.append(int(present[0]))
        stops.append(int(present[-1]) + 1)
    return (*starts, *stops)  # type: ignore[return-value]


def slice_windows(
    z1: int, z2: int, num_slices: int, rng: np.random.RandomState | None = None
) -> list[tuple[int, int]]:
    """The ``num_slices`` windows ``[start, stop)`` of a structure spanning slices ``[z1, z2)``.

    Shorter than the window: one window holding it, at a random start in ``[max(z2 - n, 0), z1]`` with ``rng``
    (training), else centred (start ``max(0, z1 - (n - (z2 - z1)) // 2)``). Longer: one random window inside it
    with ``rng``, else its first and last ``n`` slices. A window may end beyond the volume (padded later).
    """
    if num_slices < 1 or z2 <= z1:
        raise ValueError(f"need num_slices >= 1 and z1 < z2, got {num_slices}, [{z1}, {z2})")
    depth = z2 - z1
    if depth <= num_slices:
        if rng is not None:
            start = int(rng.randint(max(z2 - num_slices, 0), z1 + 1))
        else:
            start = max(0, z1 - (num_slices - depth) // 2)
        return [(start, start + num_slices)]
    if rng is not None:
        start = int(rng.randint(z1, z2 - num_slices + 1))
        return [(start, start + num_slices)]
    return [(z1, z1 + num_slices), (z2 - num_slices, z2)]


def _resize(volume: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, D, h, w) -> (C, D, *size), each slice resized in plane (trilinear with an unchanged depth = bilinear)."""
    if tuple(volume.shape[-2:]) == size:
        return volume
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    return F.interpolate(volume[None].float(), size=(volume.shape[1], *size), mode=mode, **kwargs)[0]


def _pad(volume: torch.Tensor, num_slices: int, spatial_size: int) -> torch.Tensor:
    """Pad (C, D, h, w) to (C, num_slices, spatial_size, spatial_size): slices at the end, in plane centred."""
    _, depth, h, w = volume.shape
    top, left = (spatial_size - h) // 2, (spatial_size - w) // 2
    pad = (left, spatial_size - w - left, top, spatial_size - h - top, 0, num_slices - depth)
    return F.pad(volume, pad)


class VertebraCropd(Randomizable, MapTransform):
    """Crop one vertebra's window(s) from ``image`` and ``label`` (see the module doc); returns a list of items.

    Each output item is a copy of the input with ``image`` and ``label`` replaced by float32 tensors
    (1, num_slices, spatial_size, spatial_size) and ``fraction_key`` holding, for each value of ``labels``, its
    visible fraction ``visible / (total + smooth)`` in that crop (float32, in the order of ``labels``; 0 for an
    absent label). Training
    (``random_window=True``) gives one item; validation gives two for a vertebra longer than ``num_slices``.

    Args:
        image_key: the CT volume (1, Z, Yi, Xi).
        label_key: the vertebra label map (1, Z, Yl, Xl), same Z; Yi / Yl and Xi / Xl give the grid ratio.
        vertebra_key: the label value of the vertebra to crop.
        num_slices: slices of a crop (reference 40).
        margin: in-plane margin around the box, in label-map pixels (reference 16).
        spatial_size: in-plane size of a crop (reference 256).
        random_window: random windows (training) instead of centred / first-and-last ones (validation).
        labels: the label values whose visible fraction is reported (C1..C7 = 1..7).
        visibility: ``"label_resolution"`` (the intent) or ``"seed"`` (the reference's mixed-resolution count).
        smooth: added to each label's total voxel count (reference 100).
        fraction_key: output key of the visible fractions.
        allow_missing_keys: MONAI's flag (both volumes are needed; kept for the MapTransform signature).
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        vertebra_key: str = "vertebra",
        num_slices: int = 40,
        margin: int = 16,
        spatial_size: int = 256,
        random_window: bool = False,
        labels: Sequence[int] = CERVICAL_LABELS,
        visibility: str = "label_resolution",
        smooth: float = 100.0,
        fraction_key: str = "visible_fraction",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__([image_key, label_key], allow_missing_keys)
        if visibility not in VISIBILITY_MODES:
            raise ValueError(f"visibility must be one of {VISIBILITY_MODES}, got {visibility!r}")
        if num_slices < 1 or spatial_size < 1 or margin < 0:
            raise ValueError(f"need num_slices, spatial_size >= 1 and margin >= 0, got {num_slices}, "
                             f"{spatial_size}, {margin}")
        self.image_key, self.label_key, self.vertebra_key = image_key, label_key, vertebra_key
        self.num_slices, self.margin, self.spatial_size = num_slices, margin, spatial_size
        self.random_window = random_window
        self.labels = tuple(int(v) for v in labels)
        self.visibility = visibility
        self.smooth = smooth
        self.fraction_key = fraction_key

    def _volumes(self, d: Mapping[Hashable, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        image = convert_to_tensor(d[self.image_key], track_meta=False)
        label = convert_to_tensor(d[self.label_key], track_meta=False)
        if image.ndim != 4 or label.ndim != 4 or image.shape[0] != 1 or label.shape[0] != 1:
            raise ValueError(f"{_case(d)}{self.image_key!r} and {self.label_key!r} must be (1, Z, Y, X), got "
                             f"{tuple(image.shape)} and {tuple(label.shape)}")
        if image.shape[1] != label.shape[1] or any(i < l for i, l in zip(image.shape[2:], label.shape[2:])):
            raise ValueError(f"{_case(d)}{self.image_key!r} {tuple(image.shape)} and {self.label_key!r} "
                             f"{tuple(label.shape)} need the same slices and an image grid at least as fine")
        return image, label

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        image, label = self._volumes(d)
        label_map = label[0].round().long()
        vertebra = int(d[self.vertebra_key])
        box = label_box(label_map.numpy(), vertebra)
        if box is None:
            raise ValueError(f"{_case(d)}vertebra {vertebra} is absent from {self.label_key!r}")
        z1, y1, x1, z2, y2, x2 = box
        num_z, height, width = label_map.shape
        y1, y2 = max(y1 - self.margin, 0), min(y2 + self.margin, height)
        x1, x2 = max(x1 - self.margin, 0), min(x2 + self.margin, width)
        scale_y, scale_x = image.shape[2] / height, image.shape[3] / width
        iy1, iy2 = round(y1 * scale_y), round(y2 * scale_y)
        ix1, ix2 = round(x1 * scale_x), round(x2 * scale_x)

        windows = slice_windows(z1, z2, self.num_slices, self.R if self.random_window else None)
        # resized once: the vertebra's whole slice range for a long one (the crop the reference counts "seed"
        # visibility on), else the window that holds it
        extent = (min(z1, windows[0][0]), max(z2, windows[-1][1]))
        image_crop = image[:, extent[0]:extent[1], iy1:iy2, ix1:ix2].float()
        label_crop = label_map[None, extent[0]:extent[1], y1:y2, x1:x2]
        label_crop = _resize(label_crop, tuple(image_crop.shape[2:]), "nearest")
        factor = self.spatial_size / max(image_crop.shape[2:])
        size = (max(1, round(image_crop.shape[2] * factor)), max(1, round(image_crop.shape[3] * factor)))
        image_crop = _resize(image_crop, size, "trilinear")
        label_crop = _resize(label_crop, size, "nearest")

        totals = {v: int((label_map == v).sum()) for v in self.labels}
        seed_visible = {v: int((label_crop == v).sum()) for v in self.labels}
        outputs = []
        for start, stop in windows:
            rows = slice(start - extent[0], min(stop, num_z) - extent[0])
            item = dict(d)
            item[self.image_key] = _pad(image_crop[:, rows], self.num_slices, self.spatial_size)
            item[self.label_key] = _pad(label_crop[:, rows].float(), self.num_slices, self.spatial_size)
            if self.visibility == "seed":
                visible = seed_visible
            else:
                window = label_map[start:stop, y1:y2, x1:x2]
                visible = {v: int((window == v).sum()) for v in self.labels}
            item[self.fraction_key] = np.array(
                [visible[v] / (totals[v] + self.smooth) if totals[v] + self.smooth > 0 else 0.0 for v in self.labels],
                dtype=np.float32,
            )
            outputs.append(item)
        return outputs


class ZeroHiddenTargetsd(MapTransform):
    """Zero the targets of structures mostly outside the crop, then recompute the "any" target.

    ``target[target_indices[k]] = 0`` where ``data[fraction_key][k] < threshold``; then ``target[any_index]`` =
    1 if any of ``target[target_indices]`` is positive, else 0 (the reference's ``patient_overall``).

    Args:
        keys: the multilabel target vector(s), e.g. ``"target"`` = [patient_overall, C1, ..., C7].
        fraction_key: the visible fractions of :class:`VertebraCropd`, in the order of ``target_indices``.
        threshold: the smallest visible fraction that keeps a target (reference 0.3).
        target_indices: where each structure's target sits in the vector (C1..C7 at 1..7).
        any_index: index of the "any" target recomputed from the others, or None.
    """

    def __init__(
        self,
        keys: KeysCollection = "target",
        fraction_key: str = "visible_fraction",
        threshold: float = 0.3,
        target_indices: Sequence[int] = CERVICAL_LABELS,
        any_index: int | None = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fraction_key = fraction_key
        self.threshold = threshold
        self.target_indices = list(target_indices)
        self.any_index = any_index

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        fraction = np.asarray(d[self.fraction_key], dtype=np.float64)
        if fraction.shape != (len(self.target_indices),):
            raise ValueError(f"{_case(d)}{self.fraction_key!r} has shape {fraction.shape}, expected "
                             f"({len(self.target_indices)},)")
        hidden = [i for i, f in zip(self.target_indices, fraction) if f < self.threshold]
        for key in self.key_iterator(d):
            target = convert_to_tensor(d[key], track_meta=False).clone().float()
            target[hidden] = 0.0
            if self.any_index is not None:
                target[self.any_index] = float((target[self.target_indices] > 0).any())
            d[key] = target
        return d


class RandChooseVertebrad(Randomizable, MapTransform):
    """Choose the vertebra of a training item (the reference's sampling inside a study).

    Eligible: the values of ``labels`` with more than ``min_voxels`` voxels in the label map. With probability
    ``fractured_prob`` a fractured one (``target[target_indices[k]] > 0``) when there is one, else a non-fractured
    one (a fractured one if all eligible are fractured). Writes the label value to ``vertebra_key``.

    Args:
        keys: the vertebra label map (1, Z, Y, X) (one key).
        target_key: the multilabel target vector of the study.
        vertebra_key: output key of the chosen label value.
        labels: candidate label values (C1..C7 = 1..7).
        target_indices: index in the target vector of each of ``labels``.
        min_voxels: a vertebra needs more voxels than this (reference 512).
        fractured_prob: probability of showing a fractured vertebra when the study has one (reference 0.7).
    """

    def __init__(
        self,
        keys: KeysCollection = "label",
        target_key: str = "target",
        vertebra_key: str = "vertebra",
        labels: Sequence[int] = CERVICAL_LABELS,
        target_indices: Sequence[int] = CERVICAL_LABELS,
        min_voxels: int = 512,
        fractured_prob: float = 0.7,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"RandChooseVertebrad takes one label map key, got {self.keys}")
        if len(labels) != len(target_indices):
            raise ValueError(f"{len(labels)} labels but {len(target_indices)} target indices")
        if not 0.0 <= fractured_prob <= 1.0:
            raise ValueError(f"fractured_prob must be in [0, 1], got {fractured_prob}")
        self.target_key, self.vertebra_key = target_key, vertebra_key
        self.labels = [int(v) for v in labels]
        self.target_indices = list(target_indices)
        self.min_voxels = min_voxels
        self.fractured_prob = fractured_prob

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = np.asarray(convert_to_tensor(d[self.keys[0]], track_meta=False)).round().astype(np.int64)
        counts = np.bincount(label.ravel().clip(min=0), minlength=max(self.labels) + 1)
        target = np.asarray(convert_to_tensor(d[self.target_key], track_meta=False), dtype=np.float64)
        fractured, intact = [], []
        for value, index in zip(self.labels, self.target_indices):
            if counts[value] > self.min_voxels:
                (fractured if target[index] > 0 else intact).append(value)
        if not fractured and not intact:
            raise ValueError(f"{_case(d)}no vertebra of {self.labels} has more than {self.min_voxels} voxels in "
                             f"{self.keys[0]!r}")
        use_fractured = bool(fractured) and (not intact or self.R.rand() < self.fractured_prob)
        pool = fractured if use_fractured else intact
        d[self.vertebra_key] = int(pool[self.R.randint(len(pool))])
        return d


def vertebra_summary(label_map: np.ndarray | torch.Tensor, labels: Sequence[int] = CERVICAL_LABELS) -> dict[str, dict]:
    """Per-study metadata of a (Z, Y, X) vertebra label map, the input of stage 2 (the reference's
    ``compute_meta.py``): ``{"voxels": {label: count}, "boxes": {label: [z1, y1, x1, z2, y2, x2]}}`` for each of
    ``labels`` present (labels as strings, JSON keys)."""
    array = np.asarray(convert_to_tensor(label_map, track_meta=False)).round().astype(np.int64)
    if array.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) label map, got shape {array.shape}")
    counts = np.bincount(array.ravel().clip(min=0), minlength=max(labels) + 1)
    voxels, boxes = {}, {}
    for value in labels:
        if counts[value] > 0:
            voxels[str(value)] = int(counts[value])
            boxes[str(value)] = list(label_box(array, value))
    return {"voxels": voxels, "boxes": boxes}


class ClassifyVertebraed(MapTransform):
    """Stage 2 of inference: crop every found vertebra, classify the crops, reduce them to study probabilities.

    For each value of ``labels`` with more than ``min_voxels`` voxels in ``label_key``'s map, ``crop`` (a
    validation-mode :class:`VertebraCropd`) gives one or two crops; each becomes the 3-channel input (image,
    image, label map) of ``classifier``, which returns probabilities ``(B, 8)`` ([patient_overall, C1..C7], e.g. a
    sigmoid :class:`networks.ensemble.ProbabilityEnsemble` of the fold models). The study's prediction is the
    maximum over all crops of each probability, clipped to ``clip`` (the reference's validation and the
    competition's submissions, :func:`metrics.rsna_cervical_spine.study_predictions`).

    A study in which no vertebra is found gets ``prior`` and a warning (logged and listed under
    ``warnings_key``), not an error: a CT without a cervical spine is a valid input.

    Writes ``output_key`` (float32 (8,)), ``vertebra_key`` ({label: its own probability ``[C_label]`` from its
    crops}) and ``warnings_key`` (list of str).

    Args:
        classifier: callable ``(B, 3, D, H, W) -> (B, 8)`` probabilities.
        crop: the crop transform (``random_window=False``), configured with ``image_key``/``label_key``.
        prior: the 8 probabilities given to a study without a vertebra (e.g. the training prevalences).
        labels: vertebra label values (1..7) and, in the same order, ``target_indices`` in the output (1..7).
        min_voxels: a vertebra needs more voxels than this to be classified.
        batch_size: crops per classifier call.
        clip: range of the study probabilities; None: no clipping.
        device: where the crops go (the classifier's device).
    """

    def __init__(
        self,
        classifier: Any,
        crop: VertebraCropd,
        prior: Sequence[float],
        labels: Sequence[int] = CERVICAL_LABELS,
        target_indices: Sequence[int] = CERVICAL_LABELS,
        min_voxels: int = 0,
        batch_size: int = 4,
        clip: Sequence[float] | None = (0.01, 0.99),
        device: str | torch.device = "cpu",
        output_key: str = "fracture",
        vertebra_key: str = "vertebra_probabilities",
        warnings_key: str = "warnings",
    ) -> None:
        super().__init__([crop.image_key, crop.label_key])
        if crop.random_window:
            raise ValueError("ClassifyVertebraed needs a validation-mode crop (random_window=False)")
        if len(prior) != len(target_indices) + 1:
            raise ValueError(f"prior needs {len(target_indices) + 1} probabilities, got {len(prior)}")
        self.classifier, self.crop = classifier, crop
        self.prior = np.asarray(prior, dtype=np.float32)
        self.labels, self.target_indices = [int(v) for v in labels], list(target_indices)
        self.min_voxels, self.batch_size = min_voxels, batch_size
        self.clip = None if clip is None else tuple(clip)
        self.device = torch.device(device)
        self.output_key, self.vertebra_key, self.warnings_key = output_key, vertebra_key, warnings_key

    @torch.inference_mode()
    def _classify(self, crops: list[torch.Tensor]) -> np.ndarray:
        outputs = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.stack(crops[start:start + self.batch_size]).to(self.device)
            outputs.append(torch.as_tensor(self.classifier(batch)).float().cpu())
        return torch.cat(outputs).numpy()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = np.asarray(convert_to_tensor(d[self.crop.label_key], track_meta=False)).round().astype(np.int64)
        counts = np.bincount(label.ravel().clip(min=0), minlength=max(self.labels) + 1)
        found = [v for v in self.labels if counts[v] > self.min_voxels]
        warnings = list(d.get(self.warnings_key, []))
        if not found:
            message = f"{_case(d)}no cervical vertebra found; the prior probabilities are written"
            logging.getLogger(__name__).warning(message)
            d[self.output_key], d[self.vertebra_key] = self.prior.copy(), {}
            d[self.warnings_key] = warnings + [message]
            return d
        crops, owners = [], []
        for value in found:
            for item in self.crop({**d, self.crop.vertebra_key: value}):
                crops.append(torch.cat([item[self.crop.image_key], item[self.crop.image_key], item[self.crop.label_key]]))
                owners.append(value)
        probabilities = self._classify(crops)
        study = probabilities.max(axis=0)
        if self.clip is not None:
            study = np.clip(study, *self.clip)
        owners_array = np.array(owners)
        d[self.output_key] = study.astype(np.float32)
        d[self.vertebra_key] = {
            value: float(probabilities[owners_array == value, index].max())
            for value, index in zip(found, [self.target_indices[self.labels.index(v)] for v in found])
        }
        d[self.warnings_key] = warnings
        return d
