"""Mean Teacher training (Tarvainen & Valpola 2017) as MAGNET (CSV 2026, 4th place) implements it.

``MeanTeacherTrainer`` is a MONAI ``SupervisedTrainer`` with two phases:

* warm-up, 0-based epochs ``[0, mt_warmup_epochs)``: supervised steps on batches of ``train_data_loader``;
* Mean Teacher (MT), 0-based epochs ``>= mt_warmup_epochs``: each iteration takes a labelled batch of
  ``mt_data_loader`` and an unlabelled batch of ``unlabeled_data_loader`` and minimises
  ``L_sup + w_seg * L_cons,seg + w_cls * L_cons,cls``; the teacher follows the student by an exponential moving
  average (EMA) of its parameters after every MT iteration.

Epoch numbering: ignite's ``engine.state.epoch`` is 1-based and already incremented when
``Events.EPOCH_STARTED`` fires; every epoch argument of this module is MAGNET's 0-based epoch index
``engine.state.epoch - 1``. With the default ``mt_warmup_epochs=20`` the first MT epoch is ignite's epoch 21.

Ignite assumes one ``epoch_length`` for the whole run; here the two phases have different lengths, so the
trainer sets ``engine.state.epoch_length`` and the data (``Engine.set_data``) at every ``EPOCH_STARTED`` and
replaces the parts of ignite that derive the epoch from ``iteration // epoch_length``: the stop test
(``_is_done``) and the checkpoint state (``state_dict`` / ``load_state_dict``), so that a run resumed from a
checkpoint taken in any epoch, or in the middle of one, continues with the right phase, loader, epoch length
and EMA step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from monai.data import MetaTensor
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn, default_prepare_batch
from monai.inferers import Inferer
from monai.transforms import Transform
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys
from torch import nn
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from engines.prepare_batch import to_plain_tensor

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum, State
    from ignite.metrics import Metric

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")

__all__ = ["MeanTeacherKeys", "MeanTeacherTrainer", "unwrap_network"]


class MeanTeacherKeys:
    """Keys of ``engine.state.output`` written by ``MeanTeacherTrainer`` besides MONAI's image/label/pred.

    All are present in every iteration (0 in warm-up epochs), so one ``output_transform`` serves the whole run,
    e.g. ``monai.handlers.from_engine(["loss", "sup_loss", "cons_seg_loss"], first=True)``.
    """

    LOSS = CommonKeys.LOSS  # total loss of the step (unscaled by gradient accumulation)
    SUP_LOSS = "sup_loss"  # supervised loss on the labelled batch
    CONS_SEG_LOSS = "cons_seg_loss"  # segmentation consistency, before weighting
    CONS_CLS_LOSS = "cons_cls_loss"  # classification consistency, before weighting
    CONS_SEG_WEIGHT = "cons_seg_weight"  # w_seg = seg_consistency_weight * ramp
    CONS_CLS_WEIGHT = "cons_cls_weight"  # w_cls = cls_consistency_weight * ramp (0 before its start epoch)
    CONS_RAMP = "cons_ramp"  # linear ramp-up factor in [0, 1]
    EMA_ALPHA = "ema_alpha"  # EMA decay used after this step (0 in warm-up: no EMA update)


_RESUME_KEYS = ("mt_global_step", "current_epoch", "epoch_iteration")


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module holding the weights: unwraps ``DistributedDataParallel``/``DataParallel`` (``.module``) and
    ``torch.compile`` (``._orig_mod``), whose ``state_dict`` keys carry prefixes."""
    while True:
        if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), nn.Module):
            network = network._orig_mod
        else:
            return network


def _length(loader: Iterable, name: str, required: bool = True) -> int | None:
    """``len(loader)``, or None (error if ``required``) when the loader has no length."""
    if isinstance(loader, Sized):
        try:
            return len(loader)
        except TypeError:
            pass
    if required:
        raise ValueError(f"{name} must have a length (len()) to define the epoch length of the Mean Teacher phase.")
    return None


def _set_sampler_epoch(loader: Iterable, epoch: int) -> None:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


class MeanTeacherTrainer(SupervisedTrainer):
    """MONAI ``SupervisedTrainer`` with MAGNET's Mean Teacher phase (defaults = MAGNET's ``DEFAULT_CFG``).

    Teacher. ``teacher_network`` is a second instance of the student's architecture (not wrapped in DDP). It is
    loaded with the student's weights at construction, its parameters get ``requires_grad=False``, and it is put
    in eval mode at every iteration. At the start of 0-based epoch ``mt_warmup_epochs`` it is reset to the student
    (parameters and buffers). After every MT iteration, including iterations that only accumulate gradients, its
    parameters move towards the student's: ``t = alpha * t + (1 - alpha) * s`` with
    ``alpha = min(1 - 1 / (global_step + 1), ema_decay)``, ``global_step`` counting MT iterations from 0 (so the
    first update copies the student). Buffers (BatchNorm running statistics) stay as copied at the reset, as in
    MAGNET, unless ``ema_buffers=True`` averages floating-point buffers the same way and copies integer ones.
    The student may be wrapped in ``DistributedDataParallel``/``DataParallel`` or compiled: the EMA and the reset
    read the unwrapped module.

    Data. Warm-up epochs iterate ``train_data_loader`` (``epoch_length`` or its length). MT epochs iterate
    ``mt_data_loader`` (labelled; ``train_data_loader`` if None) for
    ``min(len(unlabeled_data_loader), max(1, int(len(mt_data_loader) * max_unlabeled_ratio)))`` iterations (the
    labelled part cycles when ``max_unlabeled_ratio > 1``). As in MAGNET, every epoch starts a fresh pass of its
    labelled loader and every MT epoch a fresh pass of the unlabelled loader, which is cycled when exhausted.
    Labelled batches go through ``prepare_batch``; unlabelled batches are dicts with the teacher's weak view
    (``unlabeled_weak_key``) and the student's strong view (``unlabeled_strong_key``).

    Step. The student runs two forward passes, as MAGNET does: the labelled batch and then the strong unlabelled
    batch, so BatchNorm normalises each with its own statistics; the teacher runs on the weak batch under
    ``torch.no_grad``. The consistency losses are called as ``loss(student_out, teacher_out, mt_epoch)`` with
    ``mt_epoch = epoch - mt_warmup_epochs`` (0-based; see ``losses.consistency``). Weights:
    ``ramp = min(1, (epoch - mt_warmup_epochs + 1) / consistency_rampup_epochs)``,
    ``w_seg = seg_consistency_weight * ramp`` and ``w_cls = cls_consistency_weight * ramp`` from 0-based epoch
    ``cls_consistency_start_epoch`` on (0 before). Gradient accumulation, AMP, ``optim_set_to_none`` and the
    iteration events follow ``SupervisedTrainer``: the loss is divided by ``accumulation_steps`` for the backward
    pass, the optimizer steps every ``accumulation_steps`` iterations of an epoch and at its last iteration (MAGNET
    flushes that last step after the epoch's final EMA update; here the EMA of that iteration already sees it).

    Checkpoints. Put ``"trainer"`` (this engine), the student, the teacher and the optimizer in the ``save_dict``
    of MONAI's ``CheckpointSaver`` and the same dict in ``CheckpointLoader``. The trainer's ``state_dict`` adds
    three integers to ignite's: ``mt_global_step`` (EMA step), ``current_epoch`` (``engine.state.epoch``) and
    ``epoch_iteration`` (iterations done in that epoch), from which ``load_state_dict`` restores the epoch and the
    position inside it. ``engine.state.mt_global_step`` holds the EMA step during a run.

    Args:
        device: device of the run.
        max_epochs: total number of epochs (warm-up included).
        train_data_loader: labelled loader of the warm-up epochs.
        network: student network; its output is the packed ``(B, 2C + 1, H, W)`` tensor of ``networks.magnet``.
        optimizer: optimizer of the student.
        loss_function: supervised loss, ``loss_function(pred, targets)``.
        teacher_network: teacher, same architecture as the student, not wrapped.
        unlabeled_data_loader: loader of unlabelled batches (dicts with the weak and strong views).
        seg_consistency: segmentation consistency loss, e.g. ``losses.consistency.TopKPlaqueConsistencyLoss``.
        cls_consistency: classification consistency loss, e.g. ``ConfidenceGatedConsistencyLoss``.
        mt_data_loader: labelled loader of the MT epochs; None uses ``train_data_loader``, which is what MAGNET
            does when it has unlabelled data: one labelled loader of batch 2 (``drop_last``) for both phases.
        mt_warmup_epochs: number of supervised epochs before the MT phase; the teacher is reset when it starts.
        ema_decay: upper bound of the EMA decay ``alpha``.
        ema_buffers: also average the teacher's buffers (MAGNET: False, buffers stay as copied at the reset).
        max_unlabeled_ratio: MT iterations per epoch are at most ``len(mt_data_loader) * max_unlabeled_ratio``.
        seg_consistency_weight: weight of the segmentation consistency once ramped up.
        cls_consistency_weight: weight of the classification consistency once ramped up.
        consistency_rampup_epochs: epochs of the linear ramp of both weights (MAGNET ``mt_ramp_epochs``).
        cls_consistency_start_epoch: first 0-based epoch with classification consistency.
        unlabeled_weak_key: key of the teacher's (weak, unaugmented) view in unlabelled batches.
        unlabeled_strong_key: key of the student's (strong) view in unlabelled batches.
        epoch_length: iterations of a warm-up epoch, default ``len(train_data_loader)``.
        non_blocking, prepare_batch, iteration_update, inferer, postprocessing, key_train_metric,
        additional_metrics, metric_cmp_fn, train_handlers, amp, event_names, event_to_attr, decollate,
        optim_set_to_none, to_kwargs, amp_kwargs, compile, compile_kwargs, accumulation_steps: as in
            ``monai.engines.SupervisedTrainer``; ``inferer`` also runs the teacher and the strong-view forward.

    Raises:
        ValueError: invalid schedule values, a teacher that differs from the student in parameter names or
            shapes, or a labelled loader without length.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        teacher_network: nn.Module,
        unlabeled_data_loader: Iterable | DataLoader,
        seg_consistency: Callable[..., torch.Tensor],
        cls_consistency: Callable[..., torch.Tensor],
        mt_data_loader: Iterable | DataLoader | None = None,
        mt_warmup_epochs: int = 20,
        ema_decay: float = 0.996,
        ema_buffers: bool = False,
        max_unlabeled_ratio: float = 1.0,
        seg_consistency_weight: float = 0.01,
        cls_consistency_weight: float = 0.015,
        consistency_rampup_epochs: int = 15,
        cls_consistency_start_epoch: int = 30,
        unlabeled_weak_key: str = "image",
        unlabeled_strong_key: str = "image_strong",
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Inferer | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        compile: bool = False,
        compile_kwargs: dict | None = None,
        accumulation_steps: int = 1,
    ) -> None:
        if mt_warmup_epochs < 0:
            raise ValueError(f"mt_warmup_epochs must be >= 0, got {mt_warmup_epochs}.")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}.")
        if max_unlabeled_ratio <= 0:
            raise ValueError(f"max_unlabeled_ratio must be > 0, got {max_unlabeled_ratio}.")
        if consistency_rampup_epochs < 0:
            raise ValueError(f"consistency_rampup_epochs must be >= 0, got {consistency_rampup_epochs}.")
        # train_handlers are attached below, after the trainer's own epoch handlers, which set the epoch length
        # and the data that the user's handlers see
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            inferer=inferer,
            postprocessing=postprocessing,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            train_handlers=None,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
            compile=compile,
            compile_kwargs=compile_kwargs,
            accumulation_steps=accumulation_steps,
        )
        if self.state.epoch_length is None:
            raise ValueError("train_data_loader has no length: give `epoch_length` for the warm-up epochs.")
        self.warmup_epoch_length: int = self.state.epoch_length
        self.mt_data_loader = train_data_loader if mt_data_loader is None else mt_data_loader
        self.unlabeled_data_loader = unlabeled_data_loader
        labelled_steps = max(1, int(_length(self.mt_data_loader, "mt_data_loader") * max_unlabeled_ratio))
        unlabeled_steps = _length(unlabeled_data_loader, "unlabeled_data_loader", required=False)
        if unlabeled_steps == 0:
            raise ValueError("unlabeled_data_loader is empty.")
        self.mt_epoch_length: int = labelled_steps if unlabeled_steps is None else min(unlabeled_steps, labelled_steps)

        self.teacher_network = teacher_network
        self._check_teacher()
        self.reset_teacher()
        self.teacher_network.requires_grad_(False)
        self.teacher_network.eval()

        self.seg_consistency = seg_consistency
        self.cls_consistency = cls_consistency
        self.mt_warmup_epochs = mt_warmup_epochs
        self.ema_decay = ema_decay
        self.ema_buffers = ema_buffers
        self.max_unlabeled_ratio = max_unlabeled_ratio
        self.seg_consistency_weight = seg_consistency_weight
        self.cls_consistency_weight = cls_consistency_weight
        self.consistency_rampup_epochs = consistency_rampup_epochs
        self.cls_consistency_start_epoch = cls_consistency_start_epoch
        self.unlabeled_weak_key = unlabeled_weak_key
        self.unlabeled_strong_key = unlabeled_strong_key

        self.state.mt_global_step = 0
        self._epoch_start_iteration = 0  # engine.state.iteration when the current epoch started
        self._resume_offset = 0  # iterations already done in the epoch a checkpoint resumes
        self._unlabeled_iter: Iterator | None = None
        self._unlabeled_passes = 0

        self.add_event_handler(Events.STARTED, self._on_started)
        self.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    # ----------------------------------------------------------------------------------------------- schedule

    def is_mt_epoch(self, epoch: int) -> bool:
        """Whether 0-based epoch ``epoch`` belongs to the Mean Teacher phase."""
        return epoch >= self.mt_warmup_epochs

    def consistency_ramp(self, epoch: int) -> float:
        """Linear ramp-up factor of the consistency weights in 0-based epoch ``epoch`` (0 in warm-up)."""
        progress = max(0, epoch - self.mt_warmup_epochs + 1)
        return min(1.0, progress / max(1, self.consistency_rampup_epochs))

    def consistency_weights(self, epoch: int) -> tuple[float, float]:
        """``(w_seg, w_cls)`` of 0-based epoch ``epoch``."""
        ramp = self.consistency_ramp(epoch)
        w_cls = self.cls_consistency_weight * ramp if epoch >= self.cls_consistency_start_epoch else 0.0
        return self.seg_consistency_weight * ramp, w_cls

    def ema_alpha(self, global_step: int) -> float:
        """EMA decay of MT iteration ``global_step`` (0-based): ``min(1 - 1 / (global_step + 1), ema_decay)``."""
        return min(1.0 - 1.0 / (global_step + 1), self.ema_decay)

    # ------------------------------------------------------------------------------------------------ teacher

    def _check_teacher(self) -> None:
        if self.teacher_network is unwrap_network(self.network):
            raise ValueError("teacher_network must be a separate instance of the student's architecture.")
        student = {k: v.shape for k, v in unwrap_network(self.network).named_parameters()}
        teacher = {k: v.shape for k, v in self.teacher_network.named_parameters()}
        if student != teacher:
            differ = sorted(k for k in student.keys() | teacher.keys() if student.get(k) != teacher.get(k))
            raise ValueError(
                "teacher_network must have the student's architecture; parameters that differ in name or shape: "
                f"{differ[:5]}{' ...' if len(differ) > 5 else ''}"
            )

    @torch.no_grad()
    def reset_teacher(self) -> None:
        """Copy the student's parameters and buffers into the teacher."""
        self.teacher_network.load_state_dict(unwrap_network(self.network).state_dict())

    @torch.no_grad()
    def update_teacher(self) -> float:
        """One EMA step of the teacher towards the student; advances ``state.mt_global_step``, returns alpha."""
        alpha = self.ema_alpha(self.state.mt_global_step)
        student = unwrap_network(self.network)
        for t, s in zip(self.teacher_network.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        if self.ema_buffers:
            for t, s in zip(self.teacher_network.buffers(), student.buffers()):
                if t.is_floating_point():
                    t.mul_(alpha).add_(s, alpha=1.0 - alpha)
                else:
                    t.copy_(s)
        self.state.mt_global_step += 1
        return alpha

    # ---------------------------------------------------------------------------------------- epoch handling

    def _on_started(self, engine: MeanTeacherTrainer) -> None:
        if engine.state.iteration == 0:  # a new run (not a resumed one): the EMA restarts with it
            engine.state.mt_global_step = 0

    def _on_epoch_started(self, engine: MeanTeacherTrainer) -> None:
        """Set the phase's epoch length and data; reset the teacher when the MT phase starts."""
        epoch = engine.state.epoch - 1
        mt = self.is_mt_epoch(epoch)
        offset, self._resume_offset = self._resume_offset, 0
        self._epoch_start_iteration = engine.state.iteration - offset
        engine.state.epoch_length = self.mt_epoch_length if mt else self.warmup_epoch_length
        loader = self.mt_data_loader if mt else self.data_loader
        _set_sampler_epoch(loader, engine.state.epoch)
        engine.set_data(loader)
        # ignite counts the iterations of the epoch from `_init_iter` (its own resume counter, which it would
        # otherwise set to iteration % epoch_length, wrong when the epoch lengths differ)
        engine._init_iter = offset
        if mt:
            if epoch == self.mt_warmup_epochs and offset == 0:
                self.reset_teacher()
            self._unlabeled_iter = None

    @staticmethod
    def _is_done(state: State) -> bool:
        """Ignite's stop test without its ``iteration >= epoch_length * max_epochs`` clause, which is wrong when
        the epoch length changes during the run."""
        if state.max_iters is not None and state.iteration >= state.max_iters:
            return True
        return state.max_epochs is not None and state.epoch >= state.max_epochs

    def _next_unlabeled(self) -> Any:
        for _ in range(2):
            if self._unlabeled_iter is None:
                _set_sampler_epoch(self.unlabeled_data_loader, self._unlabeled_passes)
                self._unlabeled_passes += 1
                self._unlabeled_iter = iter(self.unlabeled_data_loader)
            try:
                return next(self._unlabeled_iter)
            except StopIteration:
                self._unlabeled_iter = None
        raise ValueError("unlabeled_data_loader yielded no batch.")

    # ----------------------------------------------------------------------------------------- checkpointing

    def state_dict(self) -> OrderedDict:
        """Ignite's engine state plus ``mt_global_step``, ``current_epoch`` and ``epoch_iteration`` (ints)."""
        state = super().state_dict()
        state["mt_global_step"] = int(self.state.mt_global_step)
        state["current_epoch"] = int(self.state.epoch)
        state["epoch_iteration"] = int(self.state.iteration - self._epoch_start_iteration)
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore a ``state_dict`` of this trainer: iteration, EMA step, and the epoch and position in it.

        Ignite would take the epoch as ``iteration // epoch_length``, wrong once warm-up and MT epochs differ in
        length; the epoch is restored from ``current_epoch`` and ``epoch_iteration`` instead. An epoch that was
        interrupted resumes with its remaining iterations (from a fresh pass of its loader, as ignite does).
        """
        missing = [k for k in (*_RESUME_KEYS, "iteration", "epoch_length") if k not in state_dict]
        if missing:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: checkpoint state lacks {missing}; "
                "it must come from MeanTeacherTrainer.state_dict()."
            )
        current_epoch = int(state_dict["current_epoch"])
        done = int(state_dict["epoch_iteration"])
        finished = done >= int(state_dict["epoch_length"])
        completed = current_epoch if finished else max(current_epoch - 1, 0)
        base = {k: v for k, v in state_dict.items() if k not in (*_RESUME_KEYS, "iteration")}
        base["epoch"] = completed
        super().load_state_dict(base)
        self.state.iteration = int(state_dict["iteration"])
        self.state.mt_global_step = int(state_dict["mt_global_step"])
        self._resume_offset = 0 if finished else done
        self._epoch_start_iteration = self.state.iteration - self._resume_offset

    # --------------------------------------------------------------------------------------------- iteration

    def _iteration(  # type: ignore[override]
        self, engine: MeanTeacherTrainer, batchdata: dict[str, torch.Tensor]
    ) -> dict:
        """One warm-up or MT step; returns ``engine.state.output`` with MONAI's image/label/pred/loss keys and
        the ``MeanTeacherKeys`` terms.

        Raises:
            ValueError: When ``batchdata`` is None or an unlabelled batch lacks a view.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) == 2:
            inputs, targets = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            inputs, targets, args, kwargs = batch
        epoch = engine.state.epoch - 1
        mt = self.is_mt_epoch(epoch)
        if mt:
            weak, strong = self._unlabeled_views()
        if engine.compile:  # torch.compile and MetaTensor do not mix (see SupervisedTrainer); views are plain
            inputs = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs

        engine.state.output = {CommonKeys.IMAGE: inputs, CommonKeys.LABEL: targets}
        ramp = self.consistency_ramp(epoch) if mt else 0.0
        w_seg, w_cls = self.consistency_weights(epoch) if mt else (0.0, 0.0)

        acc = engine.accumulation_steps
        local_iter = engine.state.iteration - self._epoch_start_iteration - 1  # 0-based within the epoch
        should_zero_grad = local_iter % acc == 0
        should_step = (local_iter + 1) % acc == 0 or (local_iter + 1) == engine.state.epoch_length

        engine.network.train()
        self.teacher_network.eval()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        use_amp = engine.amp and engine.scaler is not None
        with torch.autocast("cuda", **engine.amp_kwargs) if use_amp else nullcontext():
            pred = engine.inferer(inputs, engine.network, *args, **kwargs)
            engine.state.output[CommonKeys.PRED] = pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            sup_loss = engine.loss_function(pred, targets).mean()
            cons_seg = cons_cls = torch.zeros((), device=sup_loss.device)
            loss = sup_loss
            if mt:
                with torch.no_grad():
                    teacher_out = engine.inferer(weak, self.teacher_network)
                student_out = engine.inferer(strong, engine.network)
                mt_epoch = epoch - self.mt_warmup_epochs
                cons_seg = self.seg_consistency(student_out, teacher_out, mt_epoch)
                loss = loss + w_seg * cons_seg
                if epoch >= self.cls_consistency_start_epoch:
                    cons_cls = self.cls_consistency(student_out, teacher_out, mt_epoch)
                    loss = loss + w_cls * cons_cls
            engine.state.output[CommonKeys.LOSS] = loss
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        scaled = loss / acc if acc > 1 else loss
        if use_amp:
            engine.scaler.scale(scaled).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            scaled.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.optimizer.step()
        alpha = self.update_teacher() if mt else 0.0

        engine.state.output.update(
            {
                MeanTeacherKeys.SUP_LOSS: sup_loss.detach(),
                MeanTeacherKeys.CONS_SEG_LOSS: cons_seg.detach(),
                MeanTeacherKeys.CONS_CLS_LOSS: cons_cls.detach(),
                MeanTeacherKeys.CONS_SEG_WEIGHT: w_seg,
                MeanTeacherKeys.CONS_CLS_WEIGHT: w_cls,
                MeanTeacherKeys.CONS_RAMP: ramp,
                MeanTeacherKeys.EMA_ALPHA: alpha,
            }
        )
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _unlabeled_views(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Next unlabelled batch's (weak, strong) views on the device."""
        batch = self._next_unlabeled()
        if not isinstance(batch, Mapping):
            raise ValueError(f"unlabelled batches must be dicts of views, got {type(batch).__name__}.")
        missing = [k for k in (self.unlabeled_weak_key, self.unlabeled_strong_key) if k not in batch]
        if missing:
            raise ValueError(f"unlabelled batch lacks {missing} (keys present: {sorted(batch)}).")
        to = {"device": self.state.device, "non_blocking": self.non_blocking, **self.to_kwargs}
        weak, strong = batch[self.unlabeled_weak_key], batch[self.unlabeled_strong_key]
        return to_plain_tensor(weak, **to), to_plain_tensor(strong, **to)
