"""SemiSupervisedTrainer: phases, independent unlabelled loaders, events, clipping, resume; a minimal UniMatch proves
the hooks (two unlabelled batches, CutMix from the second, a feature-perturbed decode, thresholded pseudo-labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from torch import nn

from engines.semi_supervised import SemiSupervisedKeys, SemiSupervisedTrainer
from handlers.checkpoint import ResumableCheckpoint

C = 3
SIZE = 8


class TinyEncoderDecoder(nn.Module):
    """A segmentation network with ``encode`` (feature maps) and ``decode`` (logits), as UniMatch needs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, C, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.relu(self.bn(self.stem(x)))]

    def decode(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(features[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class MiniUniMatch(SemiSupervisedTrainer):
    """UniMatch (Yang et al., CVPR 2023) reduced to its data flow, for these tests only."""

    unlabelled_output_keys = ("loss_s1", "loss_s2", "loss_fp", "seen")

    def __init__(self, *args: Any, threshold: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threshold = threshold

    def forward(self, engine, inputs, unlabelled, args, kwargs):
        if unlabelled is None:
            return super().forward(engine, inputs, unlabelled, args, kwargs)
        u, mix = unlabelled
        net = engine.network
        with torch.no_grad():
            net.eval()
            pred_mix = net(mix["image"])
            net.train()
        strong = [
            torch.where(u[f"box{i}"].unsqueeze(1), mix[f"image_s{i}"], u[f"image_s{i}"]) for i in (1, 2)
        ]
        n = inputs.shape[0]
        features = net.encode(torch.cat([inputs, u["image"]]))
        perturbed = [F.dropout2d(f, 0.5, training=True) for f in features]
        clean, fp = net.decode([torch.cat([f, p]) for f, p in zip(features, perturbed)]).chunk(2)
        pred_s1, pred_s2 = net(torch.cat(strong)).chunk(2)
        outputs = {"weak": clean[n:], "fp": fp[n:], "s1": pred_s1, "s2": pred_s2, "mix": pred_mix}
        return clean[:n], outputs

    def unlabelled_loss(self, engine, sup_loss, unlabelled, outputs):
        u, mix = unlabelled
        conf_w, mask_w = outputs["weak"].detach().softmax(1).max(1)
        conf_mix, mask_mix = outputs["mix"].softmax(1).max(1)

        def pseudo_label_loss(pred, box=None):
            mask, conf = mask_w, conf_w
            if box is not None:
                mask, conf = torch.where(box, mask_mix, mask_w), torch.where(box, conf_mix, conf_w)
            return (F.cross_entropy(pred, mask, reduction="none") * (conf >= self.threshold)).mean()

        terms = {
            "loss_s1": pseudo_label_loss(outputs["s1"], u["box1"]),
            "loss_s2": pseudo_label_loss(outputs["s2"], u["box2"]),
            "loss_fp": pseudo_label_loss(outputs["fp"]),
        }
        loss = (sup_loss + 0.25 * terms["loss_s1"] + 0.25 * terms["loss_s2"] + 0.5 * terms["loss_fp"]) / 2
        terms = {k: v.detach() for k, v in terms.items()}
        terms["seen"] = (int(u["id"]), int(mix["id"]))
        return loss, terms


def labelled(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(2, 1, SIZE, SIZE, generator=g), torch.randint(0, C, (2, SIZE, SIZE), generator=g)) for _ in range(n)
    ]


def unlabelled(n: int, first_id: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        weak = torch.rand(1, 1, SIZE, SIZE, generator=g)
        box = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
        box[:, 2:5, 3:7] = True
        out.append(
            {
                "id": torch.tensor([first_id + k]),
                "image": weak,
                "image_s1": (weak * 1.3).clamp(0, 1),
                "image_s2": (weak + 0.1 * torch.rand(weak.shape, generator=g)).clamp(0, 1),
                "box1": box,
                "box2": box.flip(-1),
            }
        )
    return out


def prepare(batch, device, non_blocking, **kwargs):
    image, label = batch
    return image.to(device), label.to(device)


def make(max_epochs: int = 3, u: list | None = None, mix: list | None = None, seed: int = 0, **kwargs) -> MiniUniMatch:
    torch.manual_seed(seed)
    net = TinyEncoderDecoder()
    options = {"warmup_epochs": 1, "max_unlabelled_ratio": None, "decollate": False}
    options.update(kwargs)
    return MiniUniMatch(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=labelled(2),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=nn.CrossEntropyLoss(),
        unlabelled_data_loaders=[
            unlabelled(3, 0, 1) if u is None else u,
            unlabelled(2, 100, 2) if mix is None else mix,
        ],
        prepare_batch=prepare,
        **options,
    )


def test_unimatch_shape_two_unlabelled_loaders_cycle_independently_and_the_loss_combines_all_branches():
    trainer = make(3)
    assert (trainer.warmup_epoch_length, trainer.semi_epoch_length) == (2, 3)  # semi epoch = one pass of u
    seen, grads = {}, {}

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def record_grads(engine):
        grads[engine.state.iteration] = {n: p.grad.abs().sum().item() for n, p in engine.network.named_parameters()}

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        out = engine.state.output
        seen.setdefault(engine.state.epoch, []).append(out["seen"])
        if out["seen"] != 0.0:
            unlabelled_terms = 0.25 * out["loss_s1"] + 0.25 * out["loss_s2"] + 0.5 * out["loss_fp"]
            total = (out[SemiSupervisedKeys.SUP_LOSS] + unlabelled_terms) / 2
            assert out[SemiSupervisedKeys.LOSS].item() == pytest.approx(total.item())
            assert min(out["loss_s1"], out["loss_s2"], out["loss_fp"]) > 0

    trainer.run()
    # warm-up draws no unlabelled batch; every semi epoch starts a fresh pass of each loader, the CutMix source
    # (2 batches) is cycled on its own within the epoch
    assert seen == {1: [0.0, 0.0], 2: [(0, 100), (1, 101), (2, 100)], 3: [(0, 100), (1, 101), (2, 100)]}
    assert trainer.state.iteration == 2 + 3 + 3
    assert all(g > 0 for g in grads[3].values())


def test_threshold_masks_out_unconfident_pseudo_labels():
    trainer = make(2, threshold=1.0)
    trainer.run()
    out = trainer.state.output
    assert float(out["loss_s1"]) == float(out["loss_s2"]) == float(out["loss_fp"]) == 0.0


def test_monai_iteration_events_fire_in_order_in_both_phases():
    trainer = make(2)
    events = []
    for event in (
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
        IterationEvents.MODEL_COMPLETED,
    ):
        trainer.add_event_handler(event, lambda engine, e=event: events.append((engine.state.iteration, e)))
    trainer.run()
    order = [e for _, e in events]
    assert len(order) == 4 * trainer.state.iteration
    assert order[:4] == [
        IterationEvents.FORWARD_COMPLETED,
        IterationEvents.LOSS_COMPLETED,
        IterationEvents.BACKWARD_COMPLETED,
        IterationEvents.MODEL_COMPLETED,
    ]
    assert order == order[:4] * trainer.state.iteration


def test_gradient_clipping_bounds_the_step():
    trainer = make(1, clip_grad_norm=1e-3, warmup_epochs=1)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.network.parameters()])
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda engine: engine.terminate())
    trainer.run()
    after = torch.cat([p.detach().flatten() for p in trainer.network.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.1 * 1e-3, rel=1e-3)  # lr * clipped norm


def test_semi_epoch_length_from_labelled_ratio_or_explicit():
    assert make(max_unlabelled_ratio=1.0).semi_epoch_length == 2  # min(len(u) 3, len(labelled) 2)
    assert make(semi_epoch_length=5).semi_epoch_length == 5
    for not_a_list_of_loaders in (unlabelled(2, 0, 0)[0], unlabelled(2, 0, 0)):  # a batch; one loader's batches
        with pytest.raises(ValueError, match="list of loaders"):
            MiniUniMatch(
                device="cpu", max_epochs=1, train_data_loader=labelled(1), network=TinyEncoderDecoder(),
                optimizer=torch.optim.SGD(TinyEncoderDecoder().parameters(), lr=0.1),
                loss_function=nn.CrossEntropyLoss(), unlabelled_data_loaders=not_a_list_of_loaders,
            )  # fmt: skip


def seed_every_iteration(trainer: SemiSupervisedTrainer) -> None:
    """Same dropout masks in a resumed run as in an uninterrupted one."""
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: torch.manual_seed(engine.state.iteration))


@pytest.mark.parametrize("stop_epoch", [1, 2])  # last warm-up epoch, first semi-supervised epoch
def test_resumable_checkpoint_resumes_in_either_phase(tmp_path: Path, stop_epoch):
    reference = make(4, warmup_epochs=2)
    seed_every_iteration(reference)
    reference.run()

    first = make(4, warmup_epochs=2)
    seed_every_iteration(first)
    path = tmp_path / "latest.pt"
    ResumableCheckpoint(path, {"trainer": first, "network": first.network, "optimizer": first.optimizer}).attach(first)
    first.add_event_handler(Events.EPOCH_COMPLETED(once=stop_epoch), lambda engine: engine.terminate())
    first.run()
    assert torch.load(path, weights_only=True)["trainer"]["current_epoch"] == stop_epoch

    resumed = make(4, warmup_epochs=2, seed=1)
    seed_every_iteration(resumed)
    objects = {"trainer": resumed, "network": resumed.network, "optimizer": resumed.optimizer}
    ResumableCheckpoint(path, objects, resume=True).attach(resumed)
    lengths = {}

    @resumed.on(Events.ITERATION_COMPLETED)
    def count(engine):
        lengths[engine.state.epoch] = lengths.get(engine.state.epoch, 0) + 1

    resumed.run()
    assert lengths == {e: 2 if e <= 2 else 3 for e in range(stop_epoch + 1, 5)}
    assert (resumed.state.epoch, resumed.state.iteration) == (4, reference.state.iteration)
    for k, v in reference.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[k], v, rtol=0, atol=0, msg=k)
