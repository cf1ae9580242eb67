from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch import nn

from engines.mean_teacher import ConsistencyTerm, MeanTeacherKeys, MeanTeacherTrainer
from engines.prepare_batch import PrepareBatchMultiTarget
from losses.consistency import ConfidenceGatedConsistencyLoss, TopKPlaqueConsistencyLoss
from networks.magnet import risk_logit, view_logits_as_batch

C = 3
SIZE = 16


class TinyPackedNet(nn.Module):
    """(B, 2, H, W) -> packed (B, 2C + 1, H, W) output, with BatchNorm buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2 * C, 3, padding=1)
        self.bn = nn.BatchNorm2d(2 * C)
        self.risk = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seg = self.bn(self.conv(x))
        risk = self.risk(x.mean(dim=(2, 3)))[:, :, None, None].expand(-1, 1, *x.shape[2:])
        return torch.cat([seg, risk], dim=1)


def magnet_consistency(
    seg_weight: float = 0.01, cls_weight: float = 0.015, cls_start_epoch: int = 1, **topk: float
) -> dict[str, ConsistencyTerm]:
    """MAGNET's two consistency terms on the packed output, as mean_teacher.json configures them."""
    topk = {"min_weight_sum": 0.0, **topk}
    return {
        "cons_seg": ConsistencyTerm(TopKPlaqueConsistencyLoss(**topk), seg_weight, 0, view_logits_as_batch),
        "cons_cls": ConsistencyTerm(
            ConfidenceGatedConsistencyLoss(threshold=0.5), cls_weight, cls_start_epoch, risk_logit
        ),
    }


def supervised_loss(pred: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    seg = torch.cat([pred[:, :C], pred[:, C : 2 * C]], dim=0)
    label = torch.cat([targets["label"][:, 0], targets["label"][:, 1]], dim=0)
    risk = F.binary_cross_entropy_with_logits(pred[:, 2 * C, 0, 0], targets["cls"][:, 0])
    return F.cross_entropy(seg, label) + 0.3 * risk


def labelled_batches(n: int, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "image": torch.rand(batch_size, 2, SIZE, SIZE, generator=g),
            "label": torch.randint(0, C, (batch_size, 2, SIZE, SIZE), generator=g),
            "cls": torch.randint(0, 2, (batch_size, 1), generator=g).float(),
        }
        for _ in range(n)
    ]


def unlabelled_batches(n: int, batch_size: int = 2, seed: int = 100) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        weak = torch.rand(batch_size, 2, SIZE, SIZE, generator=g)
        out.append({"image": weak, "image_strong": (weak * 1.2 + 0.05).clamp(0, 1)})
    return out


class Unsized:
    """An iterable of batches without a length."""

    def __init__(self, batches: list) -> None:
        self.batches = batches
        self.yielded = 0

    def __iter__(self) -> Iterator:
        for b in self.batches:
            self.yielded += 1
            yield b


def make_trainer(
    max_epochs: int,
    train: list | None = None,
    mt: list | None = None,
    unlabelled: object = None,
    handlers: list | None = None,
    seed: int = 0,
    network: nn.Module | None = None,
    cls_start_epoch: int = 1,
    **kwargs,
) -> MeanTeacherTrainer:
    torch.manual_seed(seed)
    student = TinyPackedNet() if network is None else network
    teacher = TinyPackedNet()
    options = {"warmup_epochs": 1, "consistency_rampup_epochs": 2}
    options.update(kwargs)
    return MeanTeacherTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=labelled_batches(2, 2, seed=1) if train is None else train,
        network=student,
        optimizer=torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9),
        loss_function=supervised_loss,
        teacher_network=teacher,
        unlabelled_data_loader=unlabelled_batches(3) if unlabelled is None else unlabelled,
        consistency=magnet_consistency(cls_start_epoch=cls_start_epoch),
        semi_data_loader=labelled_batches(3, 1, seed=2) if mt is None else mt,
        prepare_batch=PrepareBatchMultiTarget(target_keys=("label", "cls")),
        train_handlers=handlers,
        **options,
    )


def params(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("accumulation_steps", [1, 2])
def test_ema_follows_alpha_sequence_every_iteration(accumulation_steps):
    trainer = make_trainer(
        1, warmup_epochs=0, ema_decay=0.6, unlabelled=unlabelled_batches(4), mt=labelled_batches(4, 1, 2),
        accumulation_steps=accumulation_steps,
    )
    assert_same_state(trainer.teacher_network.state_dict(), trainer.network.state_dict())
    records = []

    @trainer.on(Events.ITERATION_STARTED)
    def before(engine):
        records.append({"teacher": params(engine.teacher_network), "student": params(engine.network)})

    @trainer.on(Events.ITERATION_COMPLETED)
    def after(engine):
        records[-1].update(
            teacher_after=params(engine.teacher_network),
            student_after=params(engine.network),
            alpha=engine.state.output[0][MeanTeacherKeys.EMA_ALPHA],
        )

    trainer.run()
    assert trainer.state.mt_global_step == 4
    assert [r["alpha"] for r in records] == pytest.approx([0.0, 0.5, 0.6, 0.6])
    for i, r in enumerate(records):
        stepped = (i + 1) % accumulation_steps == 0
        moved = any(not torch.equal(a, b) for a, b in zip(r["student"], r["student_after"]))
        assert moved == stepped
        for t, s, t_after in zip(r["teacher"], r["student_after"], r["teacher_after"]):
            torch.testing.assert_close(t_after, r["alpha"] * t + (1 - r["alpha"]) * s)
    # first step: alpha 0 copies the student
    for s, t in zip(records[0]["student_after"], records[0]["teacher_after"]):
        torch.testing.assert_close(t, s, rtol=0, atol=0)
    assert all(not p.requires_grad and p.grad is None for p in trainer.teacher_network.parameters())
    assert not trainer.teacher_network.training and trainer.network.training


@pytest.mark.parametrize("ema_buffers", [False, True])
def test_teacher_reset_to_student_when_mt_phase_starts(ema_buffers):
    trainer = make_trainer(3, warmup_epochs=2, ema_buffers=ema_buffers)
    with torch.no_grad():
        for t in trainer.teacher_network.state_dict().values():
            t.fill_(7)
    seen = {}

    @trainer.on(Events.EPOCH_STARTED)
    def capture(engine):
        seen[engine.state.epoch] = (
            {k: v.clone() for k, v in engine.teacher_network.state_dict().items()},
            {k: v.clone() for k, v in engine.network.state_dict().items()},
        )

    trainer.run()
    assert all((v == 7).all() for v in seen[2][0].values())  # no reset or EMA in warm-up epochs
    teacher_at_reset, student_at_reset = seen[3]  # ignite epoch 3 = 0-based epoch 2 = warmup_epochs
    assert_same_state(teacher_at_reset, student_at_reset)
    final = trainer.teacher_network.state_dict()
    student_mean = trainer.network.state_dict()["bn.running_mean"]
    assert not torch.equal(student_mean, student_at_reset["bn.running_mean"])
    assert torch.equal(final["bn.running_mean"], teacher_at_reset["bn.running_mean"]) != ema_buffers


def test_consistency_weights_ramp_per_epoch():
    trainer = make_trainer(4, warmup_epochs=1, consistency_rampup_epochs=2, cls_start_epoch=2)
    per_epoch = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        out = engine.state.output[0]
        keys = (MeanTeacherKeys.CONS_RAMP, MeanTeacherKeys.weight("cons_seg"), MeanTeacherKeys.weight("cons_cls"))
        per_epoch.setdefault(engine.state.epoch - 1, set()).add(tuple(round(out[k], 6) for k in keys))
        if engine.state.epoch - 1 < 2:
            assert out[MeanTeacherKeys.loss("cons_cls")] == 0.0
        total = out[MeanTeacherKeys.SUP_LOSS] + sum(
            out[MeanTeacherKeys.weight(name)] * out[MeanTeacherKeys.loss(name)] for name in ("cons_seg", "cons_cls")
        )
        assert out[MeanTeacherKeys.LOSS] == pytest.approx(total)

    trainer.run()
    assert per_epoch == {
        0: {(0.0, 0.0, 0.0)},
        1: {(0.5, 0.005, 0.0)},
        2: {(1.0, 0.01, 0.015)},
        3: {(1.0, 0.01, 0.015)},
    }


@pytest.mark.parametrize(
    "ratio, n_unlabelled, mt_length",
    [(1.0, 2, 2), (0.5, 5, 1), (2.0, 10, 6)],  # MT labelled loader: 3 batches
)
def test_phase_switch_sets_loader_and_epoch_length(ratio, n_unlabelled, mt_length):
    train = labelled_batches(4, 2, seed=1)
    trainer = make_trainer(
        4, train=train, unlabelled=unlabelled_batches(n_unlabelled), warmup_epochs=2, max_unlabelled_ratio=ratio
    )
    assert trainer.semi_epoch_length == mt_length
    lengths, batch_sizes = {}, {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        lengths[engine.state.epoch] = lengths.get(engine.state.epoch, 0) + 1
        batch_sizes.setdefault(engine.state.epoch, set()).add(len(engine.state.output))

    trainer.run()
    # ignite's own stop test (iteration >= epoch_length * max_epochs) would end this run early
    assert trainer.state.epoch == 4
    assert lengths == {1: 4, 2: 4, 3: mt_length, 4: mt_length}
    assert trainer.state.iteration == 8 + 2 * mt_length
    assert batch_sizes == {1: {2}, 2: {2}, 3: {1}, 4: {1}}  # warm-up batches of 2, MT labelled batches of 1
    assert trainer.state.mt_global_step == 2 * mt_length


def test_unsized_unlabelled_loader_is_cycled():
    unlabelled = Unsized(unlabelled_batches(2))
    trainer = make_trainer(2, unlabelled=unlabelled)
    assert trainer.semi_epoch_length == 3  # len(mt loader) * ratio
    trainer.run()
    assert unlabelled.yielded == 3 and trainer.state.mt_global_step == 3


def test_data_parallel_student_is_unwrapped():
    torch.manual_seed(3)
    trainer = make_trainer(2, network=nn.DataParallel(TinyPackedNet()))
    assert_same_state(trainer.teacher_network.state_dict(), trainer.network.module.state_dict())
    trainer.run()
    assert trainer.state.mt_global_step == 3


def test_teacher_must_match_student():
    class Other(TinyPackedNet):
        def __init__(self) -> None:
            super().__init__()
            self.risk = nn.Linear(2, 2)

    student = TinyPackedNet()
    with pytest.raises(ValueError, match="risk"):
        MeanTeacherTrainer(
            device="cpu", max_epochs=1, train_data_loader=labelled_batches(1, 1, 0), network=student,
            optimizer=torch.optim.SGD(student.parameters(), lr=0.1), loss_function=supervised_loss,
            teacher_network=Other(), unlabelled_data_loader=unlabelled_batches(1), consistency=magnet_consistency(),
        )


def checkpointed_objects(trainer: MeanTeacherTrainer) -> dict:
    return {"trainer": trainer, "net": trainer.network, "teacher": trainer.teacher_network, "opt": trainer.optimizer}


@pytest.mark.parametrize("stop_iteration", [8, 7])  # end of ignite epoch 3 (MT), and inside it
def test_resume_in_mt_epoch_restores_phase_global_step_and_teacher(tmp_path: Path, stop_iteration):
    # warm-up: 1 epoch of 2 iterations; MT epochs: 3 iterations -> iterations 1-2 | 3-5 | 6-8 | 9-11
    reference = make_trainer(4)
    reference.run()

    first = make_trainer(4)
    saver = CheckpointSaver(
        str(tmp_path), checkpointed_objects(first), save_final=True, final_filename="final.pt", save_interval=0
    )
    saver.attach(first)
    first.add_event_handler(Events.ITERATION_COMPLETED(once=stop_iteration), lambda e: e.terminate())
    first.run()
    saved_teacher = {k: v.clone() for k, v in first.teacher_network.state_dict().items()}
    assert first.state.mt_global_step == stop_iteration - 2

    resumed = make_trainer(4, seed=1)  # other initial weights: everything must come from the checkpoint
    loader = CheckpointLoader(str(tmp_path / "final.pt"), checkpointed_objects(resumed))
    loader.attach(resumed)
    at_start, lengths = {}, {}

    @resumed.on(Events.STARTED)
    def capture(engine):
        at_start.update(epoch=engine.state.epoch, step=engine.state.mt_global_step)
        assert_same_state(engine.teacher_network.state_dict(), saved_teacher)

    @resumed.on(Events.ITERATION_COMPLETED)
    def count(engine):
        lengths[engine.state.epoch] = lengths.get(engine.state.epoch, 0) + 1

    resumed.run()
    completed = 3 if stop_iteration == 8 else 2
    assert at_start == {"epoch": completed, "step": stop_iteration - 2}
    assert lengths == ({4: 3} if stop_iteration == 8 else {3: 1, 4: 3})
    assert (resumed.state.epoch, resumed.state.iteration) == (4, 11)
    assert resumed.state.mt_global_step == reference.state.mt_global_step == 9
    if stop_iteration == 8:  # resumed at an epoch boundary: the same data, the same weights
        assert_same_state(resumed.teacher_network.state_dict(), reference.teacher_network.state_dict())
        assert_same_state(resumed.network.state_dict(), reference.network.state_dict())


# Losses and gradients of two MT iterations computed by the MAGNET-shaped trainer and consistency losses this
# trainer replaced (packed output read inside the losses), for the setup of the test below. Per iteration:
# total, supervised, segmentation and classification consistency losses; gradient |sum| per student parameter
# (conv.weight, conv.bias, bn.weight, bn.bias, risk.weight, risk.bias; conv.bias ~ 0 before BatchNorm); then the
# teacher's parameter |sum| after both EMA steps.
PINNED_LOSSES = [[8.3147469, 1.6361061, 0.06664297, 1.4343334e-05], [3.6458657, 1.4873383, 0.021399964, 1.8531135e-05]]
PINNED_GRADS = [
    [102.27441, 2.5087793e-06, 10.320369, 11.482782, 2.4362216, 2.0337706],
    [38.62653, 1.1140473e-06, 3.1408377, 5.6083603, 2.6175232, 2.1326511],
]
PINNED_TEACHER = [16.743406, 0.64206743, 4.8281512, 1.1569258, 1.0835984, 0.079243295]


def test_same_losses_gradients_and_teacher_as_the_magnet_shaped_trainer():
    torch.manual_seed(0)
    student, teacher = TinyPackedNet(), TinyPackedNet()
    trainer = MeanTeacherTrainer(
        device="cpu", max_epochs=1, train_data_loader=labelled_batches(2, 2, seed=1), network=student,
        optimizer=torch.optim.SGD(student.parameters(), lr=0.1), loss_function=supervised_loss,
        teacher_network=teacher, unlabelled_data_loader=unlabelled_batches(2),
        consistency=magnet_consistency(
            seg_weight=100.0, cls_weight=1000.0, cls_start_epoch=0, k_ratio_start=0.1, k_ratio_end=0.1
        ),
        warmup_epochs=0, consistency_rampup_epochs=1,
        prepare_batch=PrepareBatchMultiTarget(target_keys=("label", "cls")),
    )  # fmt: skip
    grads, losses = [], []

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def record_grads(engine):
        grads.append([p.grad.abs().sum().item() for p in engine.network.parameters()])

    @trainer.on(Events.ITERATION_COMPLETED)
    def record_losses(engine):
        out = engine.state.output[0]
        keys = (MeanTeacherKeys.LOSS, MeanTeacherKeys.SUP_LOSS, *(MeanTeacherKeys.loss(n) for n in ("cons_seg", "cons_cls")))
        losses.append([float(out[k]) for k in keys])

    trainer.run()
    for got, expected in zip(losses, PINNED_LOSSES, strict=True):
        assert got == pytest.approx(expected, rel=1e-5)
    for got, expected in zip(grads, PINNED_GRADS, strict=True):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-4)
    teacher_sums = [p.abs().sum().item() for p in trainer.teacher_network.parameters()]
    assert teacher_sums == pytest.approx(PINNED_TEACHER, rel=1e-5)
