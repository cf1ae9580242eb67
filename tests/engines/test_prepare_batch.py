from __future__ import annotations

import torch
from monai.data import MetaTensor

from engines.prepare_batch import PrepareBatchMultiTarget


def test_batches_reach_the_network_as_plain_tensors_with_all_targets():
    batch = {
        "image": MetaTensor(torch.rand(2, 2, 8, 8), meta={"filename_or_obj": "a.h5"}),
        "label": MetaTensor(torch.zeros(2, 2, 8, 8, dtype=torch.int64)),
        "cls": torch.ones(2, 1),
        "case": ["0000", "0001"],
    }
    image, targets = PrepareBatchMultiTarget(target_keys=("label", "cls"))(batch, device="cpu")
    assert type(image) is torch.Tensor and type(targets["label"]) is torch.Tensor
    assert set(targets) == {"label", "cls"} and targets["label"].dtype == torch.int64
    torch.testing.assert_close(image, batch["image"].as_tensor())
