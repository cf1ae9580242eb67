"""OCT cubes as the AI Challenger 2018 retinal edema challenge ships them, and the 2.5D slice stacking.

A cube (one eye, Cirrus "MacularCube512x128") is a folder of B-scan images named by their 1-based slice number,
``1.bmp`` ... ``128.bmp`` (1024 rows x 512 columns, 8-bit grey); its label is a folder of the same names whose grey
values are 0 background, 255 REA, 191 SRF, 128 PED (see :mod:`data.ai_challenger_oct` for the folder layout).

* :class:`LoadOCTCubed` reads such a folder into an ``(S, H, W)`` uint8 array with :func:`formats.oct.read_oct_cube`
  (slices in numeric order; a broken cube raises a :class:`~formats.errors.CaseReadError` naming the cube folder and
  the slice). The label codes are then mapped to class indices with MONAI's
  ``MapLabelValued`` (``orig_labels=[255, 191, 128]``, ``target_labels=[1, 2, 3]``, ``dtype="uint8"``).
* :class:`SaveOCTPredictiond` writes what a cube's prediction is (the packed probabilities of
  :mod:`networks.unet_plus_plus`): the label volume as NIfTI and the per-slice lesion probabilities as CSV;
  :func:`formats.oct.read_oct_prediction` reads them back for scoring.
* :class:`transforms.utility.StackNeighbourSlicesd` builds the 2.5D input ON THE FLY: for slice i the channels
  are slices i-1, i, i+1 of the cube, edges replicated (the reference writes these stacks to disk as "trans3channel" PNGs beforehand). Given
  a slice index it returns ``(3, H, W)`` (training: one item per (cube, slice), see
  :class:`data.ai_challenger_oct.OCTSliceDataset`); without one it stacks the whole cube to ``(3, S, H, W)``, which
  :class:`monai.inferers.SliceInferer` (``spatial_dim=0``) runs through a 2D network slice by slice.

Keeping the cached cubes in uint8 (70 training cubes: 9.4 GB with labels, 4x that in float32) and converting only
the stacked slice is what makes a ``CacheDataset`` of whole cubes affordable. The rest of the reference pipeline is
MONAI: ``ScaleIntensityRanged`` (0..255 -> 0..1), ``NormalizeIntensityd(subtrahend=0.1437, divisor=0.0979)`` (the
reference's ``info.json``) and, for training only, ``RandFlipd(prob=0.5, spatial_axis=1)`` (horizontal flip).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy, ensure_tuple

from formats.errors import CaseReadError
from formats.oct import LABEL_CODES, prediction_paths, read_oct_cube, write_oct_prediction
from transforms.writers import CaseWriterd

__all__ = ["LoadOCTCubed", "SaveOCTPredictiond"]


class LoadOCTCubed(MapTransform):
    """Replace the cube folder paths in ``data[key]`` by ``(S, H, W)`` uint8 arrays (``formats.oct.read_oct_cube``).

    Args:
        keys: keys holding cube folders (image and label).
        label_keys: those of ``keys`` whose slices must only hold ``label_values``.
        label_values: grey values allowed in label slices (default: the challenge's codes 0, 128, 191, 255).
        expected_slices: if given, every cube must have exactly this many slices (128 for the challenge): a cube
            missing its last slices is an error.
        extensions: file extensions of slice images.
        first_index: number of the first slice (the challenge numbers from 1).
        allow_missing_keys: skip missing keys instead of raising.
        allow_fewer_slices: accept cubes with fewer than ``expected_slices`` slices (with a warning naming them).
        nearest_code: map each label grey value to the nearest of ``label_values`` (anti-aliased masks) instead of
            refusing values that are no code.
        colour_to_grey: convert colour slices to luminance with a warning; False refuses them.

    After loading, all loaded keys must have the same shape (an image cube and its label cube slice for slice);
    otherwise a :class:`~formats.errors.CaseReadError` names both folders.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        label_values: Sequence[int] = LABEL_CODES,
        expected_slices: int | None = None,
        extensions: Sequence[str] = (".bmp", ".png"),
        first_index: int = 1,
        allow_missing_keys: bool = False,
        allow_fewer_slices: bool = False,
        nearest_code: bool = False,
        colour_to_grey: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set(ensure_tuple(label_keys))
        unknown = self.label_keys - set(self.keys)
        if unknown:
            raise ValueError(f"label_keys {sorted(map(str, unknown))} are not among keys {list(self.keys)}")
        self.label_values = tuple(int(v) for v in label_values)
        self.expected_slices = expected_slices
        self.extensions = tuple(extensions)
        self.first_index = first_index
        self.allow_fewer_slices = allow_fewer_slices
        self.nearest_code = nearest_code
        self.colour_to_grey = colour_to_grey

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        loaded: dict[Hashable, str] = {}
        for key in self.key_iterator(d):
            folder = str(d[key])
            d[key] = read_oct_cube(
                folder,
                expected_slices=self.expected_slices,
                allowed_values=self.label_values if key in self.label_keys else None,
                extensions=self.extensions,
                first_index=self.first_index,
                allow_fewer_slices=self.allow_fewer_slices,
                nearest_code=self.nearest_code,
                colour_to_grey=self.colour_to_grey,
            )
            loaded[key] = folder
        shapes = {key: d[key].shape for key in loaded}  # type: ignore[attr-defined]
        if len(set(shapes.values())) > 1:
            detail = "; ".join(f"'{k}' {loaded[k]} is {s[0]} slices of {s[1]}x{s[2]}" for k, s in shapes.items())
            raise CaseReadError(f"OCT cube folders do not match: {detail}", path=next(iter(loaded.values())))
        return d


class SaveOCTPredictiond(CaseWriterd):
    """Write a cube's prediction: the label volume as NIfTI and per-slice lesion probabilities as CSV.

    ``data[key]`` holds packed probabilities ``(G * (C + K), S, H, W)`` of one cube (``G`` groups of ``C``
    segmentation and ``K`` detection channels, e.g. from :class:`networks.ensemble.ProbabilityEnsemble` with
    :func:`networks.unet_plus_plus.seg_det_probabilities`; with ``return_members`` the fusion and then each member).
    For each group:

    * ``<case>_seg.nii.gz``: uint8 class indices (0 background, 1 REA, 2 SRF, 3 PED), the argmax of the
      segmentation channels, slices in their file order (axes: :func:`formats.oct.write_oct_prediction`).
    * ``<case>_det.csv``: one row per B-scan, ``slice`` (the file number, from 1) and the probability of each
      lesion (the detection head's sigmoid).

    Args:
        output_dir: folder of the outputs; with ``variants`` one sub-folder per group.
        num_classes: segmentation channels per group (background included).
        variants: names of the channel groups (e.g. ``["fusion", "unet_plus_plus", "unet"]``); None: one group,
            written straight into ``output_dir``.
        key: data key of the probabilities.
        case_key: data key of the cube's id (names the files).
        first_slice: number of the first slice in the CSV (the challenge numbers its files from 1).
        overwrite: replace existing outputs; otherwise an existing file is an error for that cube.

    Files are written atomically (:func:`formats.oct.write_oct_prediction`): a reader never sees half a volume. All
    files of a cube appear together or none does (:class:`transforms.writers.CaseWriterd`): a failure in the last
    group leaves no volume of the first.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_classes: int = 4,
        variants: Sequence[str] | None = None,
        key: str = "pred",
        case_key: str = "case",
        first_slice: int = 1,
        overwrite: bool = False,
    ) -> None:
        super().__init__(key, output_dir, case_key=case_key, overwrite=overwrite)
        self.num_classes = num_classes
        self.variants = None if variants is None else [str(v) for v in variants]
        self.key = key
        self.first_slice = first_slice

    def _folders(self) -> list[Path]:
        return [self.output_dir] if self.variants is None else [self.output_dir / v for v in self.variants]

    def output_paths(self, case: str) -> list[Path]:
        """``<case>_seg.nii.gz`` and ``<case>_det.csv`` of each group (:func:`formats.oct.prediction_paths`)."""
        return [path for folder in self._folders() for path in prediction_paths(folder, case)]

    def write(self, case: str, data: dict[Hashable, Any]) -> None:
        probs = convert_to_numpy(data[self.key])
        groups = 1 if self.variants is None else len(self.variants)
        if probs.ndim != 4 or probs.shape[0] % groups or probs.shape[0] // groups <= self.num_classes:
            raise ValueError(
                f"cube {case}: expected {groups} group(s) of {self.num_classes} + K probability channels "
                f"(channels, S, H, W), got shape {probs.shape}"
            )
        width = probs.shape[0] // groups
        for g, folder in enumerate(self._folders()):
            group = probs[g * width : (g + 1) * width]
            labels = np.argmax(group[: self.num_classes], axis=0).astype(np.uint8)  # (S, H, W)
            detection = group[self.num_classes :, :, 0, 0].T  # (S, K): constant over H, W
            write_oct_prediction(folder, case, labels, detection, self.first_slice, self.overwrite)
