"""Mean Teacher training (Tarvainen & Valpola 2017) as MAGNET (CSV 2026, 4th place) implements it.

``MeanTeacherTrainer`` is a ``engines.semi_supervised.SemiSupervisedTrainer``: supervised warm-up epochs
``[0, warmup_epochs)``, then Mean Teacher (MT) epochs where each iteration takes a labelled batch and an
unlabelled batch and minimises ``L_sup + sum_i w_i * L_cons,i``; the teacher (``engines.ema.EMATeacher``) follows
the student by an exponential moving average (EMA) of its parameters after every MT iteration.

The consistency losses take plain tensors (logits); each :class:`ConsistencyTerm` names the function that takes
the network's output apart for its loss (for MAGNET's packed output ``networks.magnet.view_logits_as_batch`` and
``networks.magnet.risk_logit``), so neither this trainer nor the losses know a network's output layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from engines.ema import EMATeacher
from engines.semi_supervised import SemiSupervisedKeys, SemiSupervisedTrainer

__all__ = ["ConsistencyTerm", "MeanTeacherKeys", "MeanTeacherTrainer"]


class MeanTeacherKeys(SemiSupervisedKeys):
    """Keys of ``engine.state.output`` written by ``MeanTeacherTrainer`` besides MONAI's image/label/pred.

    All are present in every iteration (0 in warm-up epochs), so one ``output_transform`` serves the whole run,
    e.g. ``monai.handlers.from_engine(["loss", "sup_loss", "cons_seg_loss"], first=True)``.
    """

    CONS_RAMP = "cons_ramp"  # linear ramp-up factor in [0, 1]
    EMA_ALPHA = "ema_alpha"  # EMA decay used after this step (0 in warm-up: no EMA update)

    @staticmethod
    def loss(name: str) -> str:
        """Key of consistency term ``name``'s loss, before weighting."""
        return f"{name}_loss"

    @staticmethod
    def weight(name: str) -> str:
        """Key of consistency term ``name``'s weight in this step (ramp included, 0 before its start epoch)."""
        return f"{name}_weight"


class ConsistencyTerm:
    """One consistency loss of Mean Teacher, its weight and its start.

    In MT epoch ``e`` (0-based epoch ``epoch``) the term adds ``weight * ramp * loss(s, t, e)`` to the loss, with
    ``s = output_transform(student output on the strong view)``, ``t = output_transform(teacher output on the weak
    view)`` and ``e = epoch - warmup_epochs``; before 0-based epoch ``start_epoch`` it adds nothing and is not
    computed.

    Args:
        loss: ``loss(student, teacher, mt_epoch) -> scalar``, e.g. ``losses.consistency.TopKPlaqueConsistencyLoss``.
        weight: weight once ramped up.
        start_epoch: first 0-based epoch (counted from the start of training) in which the term counts.
        output_transform: maps a network output to what ``loss`` takes (e.g. the logits of one head); None passes
            the output unchanged.
    """

    def __init__(
        self,
        loss: Callable[..., torch.Tensor],
        weight: float,
        start_epoch: int = 0,
        output_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        if weight < 0:
            raise ValueError(f"consistency weight must be >= 0, got {weight}.")
        self.loss = loss
        self.weight = weight
        self.start_epoch = start_epoch
        self.output_transform = output_transform

    def select(self, output: Any) -> Any:
        """What ``loss`` takes of a network output."""
        return output if self.output_transform is None else self.output_transform(output)


class MeanTeacherTrainer(SemiSupervisedTrainer):
    """Mean Teacher on top of ``SemiSupervisedTrainer`` (defaults = MAGNET's ``DEFAULT_CFG``).

    Teacher. ``teacher_network`` is a second instance of the student's architecture (not wrapped in DDP), wrapped
    in an ``engines.ema.EMATeacher``. It is loaded with the student's weights at construction and reset to the
    student (parameters and buffers) when the MT phase starts. After every MT iteration, including iterations
    that only accumulate gradients, it takes EMA step ``state.mt_global_step`` (counting MT iterations from 0, so
    the first update copies the student): ``alpha = min(1 - 1 / (mt_global_step + 1), ema_decay)``. Buffers stay
    as copied at the reset, as in MAGNET, unless ``ema_buffers=True``. ``mt_global_step`` is an ignite
    ``state_dict_user_keys`` entry, so the trainer's checkpoint carries it; checkpoint the teacher network itself
    next to the student.

    Step. The student runs two forward passes, as MAGNET does: the labelled batch and then the strong unlabelled
    batch (``unlabelled_strong_key``), so BatchNorm normalises each with its own statistics; the teacher runs in
    eval mode on the weak batch (``unlabelled_weak_key``) under ``torch.no_grad``. Every ``ConsistencyTerm`` of
    ``consistency`` (in order) from its start epoch adds ``term.weight * ramp * term.loss(s, t, mt_epoch)``, with
    ``ramp = min(1, (mt_epoch + 1) / consistency_rampup_epochs)`` and ``mt_epoch`` the 0-based MT epoch.
    ``engine.state.output`` gets ``MeanTeacherKeys``: ``sup_loss``, ``cons_ramp``, ``ema_alpha`` and, per term
    ``name``, ``<name>_loss`` and ``<name>_weight``.

    Args:
        device: device of the run.
        max_epochs: total number of epochs (warm-up included).
        train_data_loader: labelled loader of the warm-up epochs.
        network: student network.
        optimizer: optimizer of the student.
        loss_function: supervised loss, ``loss_function(pred, targets)``.
        teacher_network: teacher, same architecture as the student, not wrapped.
        unlabelled_data_loader: loader of unlabelled batches (dicts with the weak and strong views).
        consistency: name -> ``ConsistencyTerm``; names key the terms in ``engine.state.output``.
        warmup_epochs: number of supervised epochs before the MT phase; the teacher is reset when it starts.
        ema_decay: upper bound of the EMA decay ``alpha``.
        ema_buffers: also average the teacher's buffers (MAGNET: False, buffers stay as copied at the reset).
        consistency_rampup_epochs: MT epochs of the linear ramp of all consistency weights (MAGNET
            ``mt_ramp_epochs``).
        unlabelled_weak_key: key of the teacher's (weak, unaugmented) view in unlabelled batches.
        unlabelled_strong_key: key of the student's (strong) view in unlabelled batches.
        kwargs: ``SemiSupervisedTrainer`` arguments: ``semi_data_loader`` (MAGNET uses one labelled loader of
            batch 2, ``drop_last``, for both phases when it has unlabelled data: leave it None),
            ``max_unlabelled_ratio``, ``semi_epoch_length``, ``clip_grad_norm``, and MONAI ``SupervisedTrainer``'s
            (``prepare_batch``, ``train_handlers``, ``amp``, ``accumulation_steps``, ...; ``inferer`` also runs the
            teacher and the strong-view forward).

    Raises:
        ValueError: invalid schedule values, no consistency term, a teacher that differs from the student in
            parameter names or shapes, or a labelled loader without length.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        teacher_network: nn.Module,
        unlabelled_data_loader: Iterable | DataLoader,
        consistency: Mapping[str, ConsistencyTerm],
        warmup_epochs: int = 20,
        ema_decay: float = 0.996,
        ema_buffers: bool = False,
        consistency_rampup_epochs: int = 15,
        unlabelled_weak_key: str = "image",
        unlabelled_strong_key: str = "image_strong",
        **kwargs: Any,
    ) -> None:
        if consistency_rampup_epochs < 0:
            raise ValueError(f"consistency_rampup_epochs must be >= 0, got {consistency_rampup_epochs}.")
        if not consistency:
            raise ValueError("consistency must name at least one ConsistencyTerm.")
        self.consistency = dict(consistency)
        self.unlabelled_output_keys = (
            MeanTeacherKeys.CONS_RAMP,
            MeanTeacherKeys.EMA_ALPHA,
            *(key for name in self.consistency for key in (MeanTeacherKeys.loss(name), MeanTeacherKeys.weight(name))),
        )
        self.teacher = EMATeacher(teacher_network, decay=ema_decay, average_buffers=ema_buffers)
        self.consistency_rampup_epochs = consistency_rampup_epochs
        self.unlabelled_weak_key = unlabelled_weak_key
        self.unlabelled_strong_key = unlabelled_strong_key
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            unlabelled_data_loaders=[unlabelled_data_loader],
            warmup_epochs=warmup_epochs,
            **kwargs,
        )
        self.teacher.check_student(self.network)
        self.teacher.reset(self.network)
        self.state.mt_global_step = 0
        self.state_dict_user_keys.append("mt_global_step")

    @property
    def teacher_network(self) -> nn.Module:
        """The teacher network (checkpoint it next to the student)."""
        return self.teacher.network

    def consistency_ramp(self, mt_epoch: int) -> float:
        """Linear ramp-up factor of the consistency weights in MT epoch ``mt_epoch`` (0-based)."""
        return min(1.0, max(0, mt_epoch + 1) / max(1, self.consistency_rampup_epochs))

    # -------------------------------------------------------------------------------------------------- hooks

    def on_semi_supervised_start(self, engine: MeanTeacherTrainer) -> None:
        """Reset the teacher to the student; the EMA steps count from 0 again."""
        self.teacher.reset(engine.network)
        engine.state.mt_global_step = 0

    def forward(
        self, engine: MeanTeacherTrainer, inputs: torch.Tensor, unlabelled: list[Any] | None, args: tuple, kwargs: dict
    ) -> tuple[torch.Tensor, Any]:
        """Student on the labelled batch; in MT epochs also the teacher on the weak and the student on the strong
        view: ``(pred, (student_out, teacher_out))``."""
        self.teacher.network.eval()
        pred, _ = super().forward(engine, inputs, unlabelled, args, kwargs)
        if unlabelled is None:
            return pred, None
        batch = unlabelled[0]
        missing = [k for k in (self.unlabelled_weak_key, self.unlabelled_strong_key) if k not in batch]
        if missing:
            raise ValueError(f"unlabelled batch lacks {missing} (keys present: {sorted(batch)}).")
        with torch.no_grad():
            teacher_out = engine.inferer(batch[self.unlabelled_weak_key], self.teacher.network)
        student_out = engine.inferer(batch[self.unlabelled_strong_key], engine.network)
        return pred, (student_out, teacher_out)

    def unlabelled_loss(
        self, engine: MeanTeacherTrainer, sup_loss: torch.Tensor, unlabelled: list[Any], unlabelled_outputs: Any
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """``sup_loss + sum_i w_i * L_cons,i`` and the ramp, weights and losses of the terms."""
        student_out, teacher_out = unlabelled_outputs
        epoch, mt_epoch = engine.state.epoch - 1, self.semi_epoch(engine)
        ramp = self.consistency_ramp(mt_epoch)
        loss = sup_loss
        terms: dict[str, Any] = {MeanTeacherKeys.CONS_RAMP: ramp}
        for name, term in self.consistency.items():
            value = torch.zeros((), device=sup_loss.device)
            weight = 0.0
            if epoch >= term.start_epoch:
                weight = term.weight * ramp
                value = term.loss(term.select(student_out), term.select(teacher_out), mt_epoch)
                loss = loss + weight * value
            terms[MeanTeacherKeys.loss(name)] = value.detach()
            terms[MeanTeacherKeys.weight(name)] = weight
        return loss, terms

    def after_step(self, engine: MeanTeacherTrainer) -> dict[str, Any]:
        """One EMA step of the teacher towards the student."""
        alpha = self.teacher.update(engine.network, engine.state.mt_global_step)
        engine.state.mt_global_step += 1
        return {MeanTeacherKeys.EMA_ALPHA: alpha}
