"""UniMatchTrainer: pseudo-label and confidence swap inside the CutMix boxes, the 0.95 ignore mask, the loss against
an independent computation of UniMatch's step, training, the per-iteration LR schedule from JSON, resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.handlers import LrScheduleHandler
from torch import nn

from engines.unimatch import UniMatchKeys, UniMatchTrainer
from handlers.checkpoint import ResumableCheckpoint
from losses.unimatch import IgnoreMaskDiceLoss, unimatch_supervised_loss
from tests.losses.test_unimatch import reference_dice

C = 3
SIZE = 8


class TinyEncoderDecoder(nn.Module):
    """Two feature levels (full and half resolution), as a U-Net's encoder/decoder split."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.down = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.up = nn.Conv2d(6, 4, 1)
        self.head = nn.Conv2d(4, C, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        shallow = torch.relu(self.bn(self.stem(x)))
        return [shallow, torch.relu(self.down(shallow))]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        shallow, deep = features
        return self.head(shallow + F.interpolate(self.up(deep), size=shallow.shape[-2:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def labelled(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(2, 3, SIZE, SIZE, generator=g),
            "label": torch.randint(0, C, (2, 1, SIZE, SIZE), generator=g),
        }
        for _ in range(n)
    ]


def unlabelled(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        weak = torch.rand(2, 3, SIZE, SIZE, generator=g)
        boxes = torch.zeros(2, 2, 1, SIZE, SIZE, dtype=torch.bool)
        boxes[0, 0, :, 1:4, 2:7] = True
        boxes[1, 1, :, 4:8, 0:3] = True
        out.append(
            {
                "image": weak,
                "image_s1": (weak * 1.4).clamp(0, 1),
                "image_s2": (weak + 0.2 * torch.rand(weak.shape, generator=g)).clamp(0, 1),
                "box_s1": boxes[0],
                "box_s2": boxes[1],
            }
        )
    return out


def make(max_epochs: int = 2, seed: int = 0, lr: float = 1e-2, **kwargs) -> UniMatchTrainer:
    torch.manual_seed(seed)
    net = TinyEncoderDecoder()
    options = {"conf_threshold": 0.95, "decollate": False}
    options.update(kwargs)
    return UniMatchTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=labelled(2),
        network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01),
        loss_function=unimatch_supervised_loss(),
        unlabelled_data_loader=unlabelled(3, 1),
        mix_data_loader=unlabelled(3, 2),
        unlabelled_loss_function=IgnoreMaskDiceLoss(C),
        **options,
    )


def logits_of(probs: list[list[float]]) -> torch.Tensor:
    """(1, C, 1, N) logits whose softmax is the given per-pixel probabilities."""
    return torch.tensor(probs).log().T.reshape(1, C, 1, -1)


class Recorder:
    """An unlabelled loss that records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def __call__(self, pred, label, mask):
        self.calls.append((pred, label, mask))
        return torch.tensor(float(len(self.calls)))


def test_pseudo_labels_and_confidences_swap_inside_the_box_and_the_095_mask():
    trainer = make()
    recorder = Recorder()
    trainer.unlabelled_loss_function = recorder
    # four pixels of one image; weak: classes 0, 1, 2, 1 with confidences .96, .949, .951, .5
    weak = logits_of([[0.96, 0.02, 0.02], [0.041, 0.949, 0.01], [0.02, 0.029, 0.951], [0.3, 0.5, 0.2]])
    # mix: classes 2, 2, 0, 0 with confidences .99, .6, .97, .4
    mix = logits_of([[0.005, 0.005, 0.99], [0.2, 0.2, 0.6], [0.97, 0.02, 0.01], [0.4, 0.3, 0.3]])
    box1 = torch.tensor([[[[False, True, True, False]]]])  # pixels 1, 2 from mix
    box2 = torch.zeros_like(box1)
    outputs = {"weak": weak, "fp": weak * 2, "strong": (weak * 3, weak * 4), "mix": mix}
    loss, terms = trainer.unlabelled_loss(trainer, torch.tensor(10.0), [{"box_s1": box1, "box_s2": box2}, {}], outputs)
    (p1, l1, m1), (p2, l2, m2), (pfp, lfp, mfp) = recorder.calls
    assert torch.equal(p1, weak * 3) and torch.equal(p2, weak * 4) and torch.equal(pfp, weak * 2)
    assert l1.tolist() == [[[0, 2, 0, 1]]] and m1.tolist() == [[[True, False, True, False]]]
    assert l2.tolist() == lfp.tolist() == [[[0, 1, 2, 1]]]
    assert m2.tolist() == mfp.tolist() == [[[True, False, True, False]]]
    assert terms[UniMatchKeys.MASK_RATIO].item() == pytest.approx(0.5)
    # recorded losses are 1, 2, 3: (10 + .25 * 1 + .25 * 2 + .5 * 3) / 2
    assert loss.item() == pytest.approx((10 + 0.25 + 0.5 + 1.5) / 2)
    assert [terms[k].item() for k in ("loss_s1", "loss_s2", "loss_fp")] == [1.0, 2.0, 3.0]


def test_forward_and_loss_equal_an_independent_computation_of_the_unimatch_step():
    trainer = make(conf_threshold=0.4)  # an untrained net is rarely 0.95 confident: keep pixels in every term
    net = trainer.network
    x, y = labelled(1)[0]["image"], labelled(1)[0]["label"]
    u, mix = unlabelled(1, 1)[0], unlabelled(1, 2)[0]

    torch.manual_seed(5)
    pred, outputs = trainer.forward(trainer, x, [u, mix], (), {})
    sup = unimatch_supervised_loss()(pred, y)
    loss, terms = trainer.unlabelled_loss(trainer, sup, [u, mix], outputs)

    # UniMatch's loop, written out (in-place CutMix and swaps as the original does)
    torch.manual_seed(5)
    with torch.no_grad():
        net.eval()
        pred_mix = net(mix["image"])
        net.train()
    s1, s2 = u["image_s1"].clone(), u["image_s2"].clone()
    b1, b2 = u["box_s1"][:, 0], u["box_s2"][:, 0]
    s1[b1.unsqueeze(1).expand(s1.shape)] = mix["image_s1"][b1.unsqueeze(1).expand(s1.shape)]
    s2[b2.unsqueeze(1).expand(s2.shape)] = mix["image_s2"][b2.unsqueeze(1).expand(s2.shape)]
    feats = net.encode(torch.cat([x, u["image"]]))
    preds, preds_fp = net.decode([torch.cat([f, nn.Dropout2d(0.5)(f)]) for f in feats]).chunk(2)
    pred_x, pred_w = preds.split([2, 2])
    pred_s1, pred_s2 = net(torch.cat([s1, s2])).chunk(2)
    conf_w, mask_w = pred_w.detach().softmax(1).max(1)
    conf_m, mask_m = pred_mix.softmax(1).max(1)
    m1, c1, m2, c2 = mask_w.clone(), conf_w.clone(), mask_w.clone(), conf_w.clone()
    m1[b1], c1[b1], m2[b2], c2[b2] = mask_m[b1], conf_m[b1], mask_m[b2], conf_m[b2]
    loss_x = (F.cross_entropy(pred_x, y[:, 0]) + reference_dice(pred_x.softmax(1), y[:, 0])) / 2
    loss_s1 = reference_dice(pred_s1.softmax(1), m1, (c1 < 0.4).float())
    loss_s2 = reference_dice(pred_s2.softmax(1), m2, (c2 < 0.4).float())
    loss_fp = reference_dice(preds_fp[2:].softmax(1), mask_w, (conf_w < 0.4).float())
    expected = (loss_x + 0.25 * loss_s1 + 0.25 * loss_s2 + 0.5 * loss_fp) / 2

    torch.testing.assert_close(pred, pred_x)
    torch.testing.assert_close(terms["loss_s1"], loss_s1.detach())
    torch.testing.assert_close(terms["loss_fp"], loss_fp.detach())
    torch.testing.assert_close(loss, expected)
    assert 0 < terms[UniMatchKeys.MASK_RATIO] < 1 and min(loss_s1, loss_s2, loss_fp) > 0
    assert not torch.equal(outputs["fp"], outputs["weak"])  # the dropout reached the decoder


def test_training_lowers_the_loss_and_logs_every_term():
    trainer = make(max_epochs=8, conf_threshold=0.0)
    losses = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        out = engine.state.output
        assert set(trainer.unlabelled_output_keys) == {"loss_s1", "loss_s2", "loss_fp", "mask_ratio"}
        assert all(k in out for k in trainer.unlabelled_output_keys)
        losses.setdefault(engine.state.epoch, []).append(out[UniMatchKeys.LOSS].item())

    trainer.run()
    assert trainer.semi_epoch_length == 3 and trainer.state.iteration == 24  # one pass of u per epoch
    first, last = sum(losses[1]) / 3, sum(losses[8]) / 3
    assert last < 0.9 * first
    assert trainer.state.output[UniMatchKeys.MASK_RATIO] == 1.0


#: the FUGC solution's per-iteration schedule, as a bundle's train.json builds it
SCHEDULE_CONFIG = {
    "lr_scheduler": {
        "_target_": "torch.optim.lr_scheduler.SequentialLR",
        "optimizer": "@optimizer",
        "schedulers": [
            {
                "_target_": "torch.optim.lr_scheduler.CosineAnnealingWarmRestarts",
                "optimizer": "@optimizer",
                "T_0": 1,
                "T_mult": 2,
                "eta_min": 1e-6,
            },
            {
                "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
                "optimizer": "@optimizer",
                "T_max": 10,
                "eta_min": 1e-6,
            },
        ],
        "milestones": [62],
    },
    "handler": {
        "_target_": "LrScheduleHandler",
        "lr_scheduler": "@lr_scheduler",
        "epoch_level": False,
        "print_lr": False,
    },
}


def expected_lr(step: int, base: float = 1e-4, eta_min: float = 1e-6) -> float:
    """LR after ``step`` scheduler steps: warm restarts of 1, 2, 4, 8, 16 iterations, then the 32-iteration cycle
    cut at step 62, then cosine annealing of period 2 * 10 iterations."""
    if step < 62:
        start, period = 0, 1
        while step >= start + period:
            start, period = start + period, period * 2
        phase = (step - start) / period
    else:
        phase = (step - 62) / 10
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * phase)) / 2


def test_per_iteration_schedule_from_json_matches_the_closed_form():
    optimizer = torch.optim.AdamW(nn.Linear(1, 1).parameters(), lr=1e-4, weight_decay=0.01)
    parser = ConfigParser(SCHEDULE_CONFIG)
    parser["optimizer"] = optimizer
    scheduler = parser.get_parsed_content("lr_scheduler")
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(100):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(expected_lr(step), rel=1e-6, abs=1e-12), step
    assert lrs[1] == pytest.approx(1e-4) and lrs[62] == pytest.approx(1e-4) and lrs[72] == pytest.approx(1e-6)


def test_lr_schedule_handler_steps_every_iteration_of_the_trainer():
    trainer = make(max_epochs=2, lr=1e-4)
    parser = ConfigParser(SCHEDULE_CONFIG)
    parser["optimizer"] = trainer.optimizer
    handler = parser.get_parsed_content("handler")
    assert isinstance(handler, LrScheduleHandler)
    handler.attach(trainer)
    lrs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: lrs.append(e.optimizer.param_groups[0]["lr"]))
    trainer.run()
    assert lrs == pytest.approx([expected_lr(step) for step in range(1, 7)])


def test_resume_inside_the_semi_supervised_phase_with_the_schedule(tmp_path: Path):
    def build(seed: int) -> tuple[UniMatchTrainer, dict]:
        trainer = make(max_epochs=3, seed=seed, lr=1e-3, conf_threshold=0.5)
        parser = ConfigParser(SCHEDULE_CONFIG)
        parser["optimizer"] = trainer.optimizer
        parser.get_parsed_content("handler").attach(trainer)
        # same dropout masks in the resumed run as in the uninterrupted one
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: torch.manual_seed(engine.state.iteration))
        objects = {"trainer": trainer, "network": trainer.network, "optimizer": trainer.optimizer,
                   "lr_scheduler": parser.get_parsed_content("lr_scheduler")}  # fmt: skip
        return trainer, objects

    reference, _ = build(0)
    reference.run()
    path = tmp_path / "latest.pt"
    first, objects = build(0)
    ResumableCheckpoint(path, objects).attach(first)
    first.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda engine: engine.terminate())
    first.run()
    resumed, objects = build(1)
    ResumableCheckpoint(path, objects, resume=True).attach(resumed)
    resumed.run()
    assert (resumed.state.epoch, resumed.state.iteration) == (3, reference.state.iteration)
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(reference.optimizer.param_groups[0]["lr"])
    for k, v in reference.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[k], v, msg=k)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="encode"):
        UniMatchTrainer(
            device="cpu", max_epochs=1, train_data_loader=labelled(1), network=nn.Conv2d(3, C, 1),
            optimizer=torch.optim.SGD(nn.Conv2d(3, C, 1).parameters(), lr=0.1), loss_function=nn.CrossEntropyLoss(),
            unlabelled_data_loader=unlabelled(1, 0), mix_data_loader=unlabelled(1, 1),
            unlabelled_loss_function=IgnoreMaskDiceLoss(C),
        )  # fmt: skip
    with pytest.raises(ValueError, match="one box key and one weight per strong view"):
        make(strong_weights=(0.5,))
    trainer = make(max_epochs=1)
    trainer.unlabelled_data_loaders[0] = [{k: v for k, v in b.items() if k != "box_s2"} for b in unlabelled(3, 1)]
    with pytest.raises(ValueError, match=r"unlabelled batch lacks \['box_s2'\]"):
        trainer.run()
