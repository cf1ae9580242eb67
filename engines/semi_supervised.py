"""Base of semi-supervised trainers: a supervised warm-up, then epochs on labelled + unlabelled batches.

``SemiSupervisedTrainer`` is a MONAI ``SupervisedTrainer`` whose ``_iteration`` adds unlabelled batches and an
unlabelled loss through a few hooks; methods (Mean Teacher in ``engines.mean_teacher``, UniMatch) are subclasses
that override the hooks and nothing of the schedule, the data, the optimisation or the checkpoint state.

Epoch numbering: ignite's ``engine.state.epoch`` is 1-based and already incremented when ``Events.EPOCH_STARTED``
fires; every epoch argument of this module is the 0-based index ``engine.state.epoch - 1``, as in the original
solutions. With ``warmup_epochs=20`` the first semi-supervised epoch is ignite's epoch 21.

Ignite assumes one ``epoch_length`` for the whole run; here the two phases have different lengths, so the trainer
sets ``engine.state.epoch_length`` and the data (``Engine.set_data``) at every ``EPOCH_STARTED`` and replaces the
parts of ignite that derive the epoch from ``iteration // epoch_length``: the stop test (``_is_done``) and the
checkpoint state (``state_dict`` / ``load_state_dict``), so that a run resumed from a checkpoint taken in any
epoch, or in the middle of one, continues with the right phase, loader and epoch length.
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

__all__ = ["SemiSupervisedKeys", "SemiSupervisedTrainer"]


class SemiSupervisedKeys:
    """Keys of ``engine.state.output`` that every ``SemiSupervisedTrainer`` writes besides image/label/pred."""

    LOSS = CommonKeys.LOSS  # total loss of the step (before the division by accumulation_steps)
    SUP_LOSS = "sup_loss"  # supervised loss of the labelled batch


_RESUME_KEYS = ("current_epoch", "epoch_iteration")


def _length(loader: Iterable, name: str, required: bool = True) -> int | None:
    """``len(loader)``, or None (error if ``required``) when the loader has no length."""
    if isinstance(loader, Sized):
        try:
            return len(loader)
        except TypeError:
            pass
    if required:
        raise ValueError(f"{name} must have a length (len()) to define the epoch length of the semi-supervised phase.")
    return None


def _set_sampler_epoch(loader: Iterable, epoch: int) -> None:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


class SemiSupervisedTrainer(SupervisedTrainer):
    """MONAI ``SupervisedTrainer`` with a supervised warm-up and a semi-supervised phase.

    Phases. 0-based epochs ``[0, warmup_epochs)`` are supervised steps on batches of ``train_data_loader``
    (``epoch_length`` or its length per epoch). Epochs ``>= warmup_epochs`` take at every iteration a labelled
    batch of ``semi_data_loader`` (``train_data_loader`` if None) and one batch of each unlabelled loader, and
    minimise what :meth:`unlabelled_loss` returns. A semi-supervised epoch has ``semi_epoch_length`` iterations,
    by default ``min(len(unlabelled_data_loaders[0]), max(1, int(len(semi_data_loader) * max_unlabelled_ratio)))``
    (only the first term when ``max_unlabelled_ratio`` is None); the labelled loader cycles when it is shorter.
    Every epoch starts a fresh pass of its labelled loader and every semi-supervised epoch a fresh pass of each
    unlabelled loader; each unlabelled loader is cycled on its own when exhausted (a ``DistributedSampler`` gets
    a new epoch at every pass).

    Step (``_iteration``, the order of MONAI's ``SupervisedTrainer``): ``prepare_batch`` the labelled batch and
    :meth:`prepare_unlabelled` the unlabelled ones; under AMP autocast :meth:`forward` (event
    ``FORWARD_COMPLETED``), the supervised loss ``loss_function(pred, targets).mean()``, in the semi-supervised
    phase :meth:`unlabelled_loss` (event ``LOSS_COMPLETED``); backward of ``loss / accumulation_steps`` through
    the ``GradScaler`` under AMP (``BACKWARD_COMPLETED``); every ``accumulation_steps`` iterations of an epoch and
    at its last one, gradient clipping to ``clip_grad_norm`` (unscaled first under AMP) and the optimizer step; in
    the semi-supervised phase :meth:`after_step`; then ``MODEL_COMPLETED``. ``engine.state.output`` holds MONAI's
    image/label/pred/loss, ``SemiSupervisedKeys.SUP_LOSS`` and the terms the hooks return; the keys named in
    ``unlabelled_output_keys`` are 0.0 in warm-up epochs, so one ``output_transform`` serves the whole run.

    Hooks a method overrides (all take the engine first, as MONAI's callbacks do):

    * :meth:`prepare_unlabelled` ``(engine, batch)``: one unlabelled batch on the device (default: every tensor
      of a dict as a plain tensor);
    * :meth:`forward` ``(engine, inputs, unlabelled, args, kwargs) -> (pred, unlabelled_outputs)``: every
      forward pass of the step (student and teacher). ``unlabelled`` is the list of prepared unlabelled batches,
      one per loader, or None in warm-up. ``pred`` is what ``loss_function`` and the metrics get for the labelled
      batch; ``unlabelled_outputs`` is passed on to :meth:`unlabelled_loss`. Default: the labelled forward;
    * :meth:`unlabelled_loss` ``(engine, sup_loss, unlabelled, unlabelled_outputs) -> (loss, terms)``: the
      step's total loss, combining ``sup_loss`` with the unlabelled terms as the method does, and a dict of terms
      for ``engine.state.output`` (required);
    * :meth:`on_semi_supervised_start` ``(engine)``: when the first semi-supervised epoch starts (not when a run
      resumes inside it), e.g. a teacher reset;
    * :meth:`after_step` ``(engine) -> terms``: after the backward pass (and optimizer step, if any) of every
      semi-supervised iteration, e.g. an EMA update.

    Mean Teacher (``engines.mean_teacher.MeanTeacherTrainer``): one unlabelled loader with weak and strong views;
    ``forward`` runs the student on the labelled and strong batches and the EMA teacher on the weak one,
    ``unlabelled_loss`` adds ramped, weighted consistency losses, ``on_semi_supervised_start`` resets the teacher,
    ``after_step`` updates it (``engines.ema.EMATeacher``).

    UniMatch (Yang et al., CVPR 2023) fits as: ``unlabelled_data_loaders=[u, u_mix]`` (two shuffles of the
    unlabelled set: batches to train on and CutMix sources; dicts with the weak view, two strong views and their
    two CutMix boxes), ``warmup_epochs=0``, ``max_unlabelled_ratio=None`` (an epoch is one pass of ``u``, the
    labelled loader cycling). ``forward``: predict the weak view of ``u_mix`` without gradients in eval mode
    (its pseudo-labels), paste the ``u_mix`` strong views into ``u``'s inside the boxes, run
    ``model.encode`` once on labelled + weak images, ``model.decode`` on the features and on their Dropout2d(0.5)
    copies (the feature-perturbed branch), and the student on both strong views; return the labelled logits as
    ``pred`` and the rest as ``unlabelled_outputs``. ``unlabelled_loss``: pseudo-labels = argmax of the weak
    prediction, ignored below the confidence threshold (0.95), replaced by ``u_mix``'s inside the CutMix boxes;
    ``loss = (sup_loss + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2``. No teacher, no ``after_step``.
    ``engines.unimatch.UniMatchTrainer`` implements it; ``tests/engines/test_semi_supervised.py`` holds a minimal
    version that pins these hooks.

    Checkpoints. Put ``"trainer"`` (this engine) and the networks and optimizer in the ``save_dict`` of
    ``handlers.checkpoint.ResumableCheckpoint`` (or MONAI's ``CheckpointSaver``/``CheckpointLoader``). The
    trainer's ``state_dict`` adds two integers to ignite's: ``current_epoch`` (``engine.state.epoch``) and
    ``epoch_iteration`` (iterations done in that epoch), from which ``load_state_dict`` restores the epoch and the
    position inside it; a subclass adds its own counters to ``state_dict_user_keys`` (ignite saves and restores
    those ``engine.state`` attributes).

    Args:
        device: device of the run.
        max_epochs: total number of epochs (warm-up included).
        train_data_loader: labelled loader of the warm-up epochs.
        network: the trained network.
        optimizer: its optimizer.
        loss_function: supervised loss, ``loss_function(pred, targets)``.
        unlabelled_data_loaders: loaders of unlabelled batches, one batch of each per semi-supervised iteration;
            the first defines the epoch length.
        semi_data_loader: labelled loader of the semi-supervised epochs; None uses ``train_data_loader``.
        warmup_epochs: number of supervised epochs before the semi-supervised phase.
        max_unlabelled_ratio: semi-supervised iterations per epoch are at most
            ``len(semi_data_loader) * max_unlabelled_ratio``; None: no bound from the labelled loader.
        semi_epoch_length: iterations of a semi-supervised epoch; None derives it as above.
        clip_grad_norm: clip the gradients' global L2 norm to this value before each optimizer step; None: no
            clipping.
        epoch_length: iterations of a warm-up epoch, default ``len(train_data_loader)``.
        non_blocking, prepare_batch, iteration_update, inferer, postprocessing, key_train_metric,
        additional_metrics, metric_cmp_fn, train_handlers, amp, event_names, event_to_attr, decollate,
        optim_set_to_none, to_kwargs, amp_kwargs, compile, compile_kwargs, accumulation_steps: as in
            ``monai.engines.SupervisedTrainer``.

    Raises:
        ValueError: invalid schedule values, no or empty unlabelled loaders, or loaders whose lengths are needed
            and missing.
    """

    #: keys of the terms that the semi-supervised hooks write to ``engine.state.output`` (0.0 in warm-up)
    unlabelled_output_keys: tuple[str, ...] = ()

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        unlabelled_data_loaders: Sequence[Iterable | DataLoader],
        semi_data_loader: Iterable | DataLoader | None = None,
        warmup_epochs: int = 0,
        max_unlabelled_ratio: float | None = 1.0,
        semi_epoch_length: int | None = None,
        clip_grad_norm: float | None = None,
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
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
        if max_unlabelled_ratio is not None and max_unlabelled_ratio <= 0:
            raise ValueError(f"max_unlabelled_ratio must be > 0 or None, got {max_unlabelled_ratio}.")
        if semi_epoch_length is not None and semi_epoch_length < 1:
            raise ValueError(f"semi_epoch_length must be >= 1, got {semi_epoch_length}.")
        if clip_grad_norm is not None and clip_grad_norm <= 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm}.")
        loaders = unlabelled_data_loaders
        if (
            isinstance(loaders, (Mapping, DataLoader))
            or not isinstance(loaders, Sequence)
            or any(isinstance(loader, (Mapping, torch.Tensor)) for loader in loaders)
        ):
            raise ValueError("unlabelled_data_loaders must be a list of loaders (one batch of each per iteration).")
        if not unlabelled_data_loaders:
            raise ValueError("unlabelled_data_loaders is empty: give at least one unlabelled loader.")
        # train_handlers are attached below, after the trainer's own epoch handler, which sets the epoch length
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
        self.semi_data_loader = train_data_loader if semi_data_loader is None else semi_data_loader
        self.unlabelled_data_loaders = list(unlabelled_data_loaders)
        self.warmup_epochs = warmup_epochs
        self.max_unlabelled_ratio = max_unlabelled_ratio
        self.clip_grad_norm = clip_grad_norm
        self.semi_epoch_length: int = (
            self._default_semi_epoch_length() if semi_epoch_length is None else semi_epoch_length
        )

        self._epoch_start_iteration = 0  # engine.state.iteration when the current epoch started
        self._resume_offset = 0  # iterations already done in the epoch a checkpoint resumes
        self._unlabelled_iters: list[Iterator | None] = [None] * len(self.unlabelled_data_loaders)
        self._unlabelled_passes = [0] * len(self.unlabelled_data_loaders)

        self.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    def _default_semi_epoch_length(self) -> int:
        for index, loader in enumerate(self.unlabelled_data_loaders):
            if _length(loader, f"unlabelled_data_loaders[{index}]", required=False) == 0:
                raise ValueError(f"unlabelled_data_loaders[{index}] is empty.")
        candidates = []
        unlabelled = _length(self.unlabelled_data_loaders[0], "unlabelled_data_loaders[0]", required=False)
        if unlabelled is not None:
            candidates.append(unlabelled)
        if self.max_unlabelled_ratio is not None:
            labelled = _length(self.semi_data_loader, "semi_data_loader")
            candidates.append(max(1, int(labelled * self.max_unlabelled_ratio)))
        if not candidates:
            raise ValueError(
                "unlabelled_data_loaders[0] has no length and max_unlabelled_ratio is None: give semi_epoch_length."
            )
        return min(candidates)

    # ----------------------------------------------------------------------------------------------- schedule

    def is_semi_epoch(self, epoch: int) -> bool:
        """Whether 0-based epoch ``epoch`` belongs to the semi-supervised phase."""
        return epoch >= self.warmup_epochs

    def semi_epoch(self, engine: SemiSupervisedTrainer) -> int:
        """The current epoch counted from the start of the semi-supervised phase (0 = its first epoch)."""
        return engine.state.epoch - 1 - self.warmup_epochs

    # -------------------------------------------------------------------------------------------------- hooks

    def prepare_unlabelled(self, engine: SemiSupervisedTrainer, batch: Any) -> Any:
        """One unlabelled batch on the device: the tensors of a dict as plain tensors, other values unchanged."""
        if not isinstance(batch, Mapping):
            raise ValueError(f"unlabelled batches must be dicts, got {type(batch).__name__}.")
        to = {"device": engine.state.device, "non_blocking": engine.non_blocking, **engine.to_kwargs}
        return {k: to_plain_tensor(v, **to) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def forward(
        self,
        engine: SemiSupervisedTrainer,
        inputs: torch.Tensor,
        unlabelled: list[Any] | None,
        args: tuple,
        kwargs: dict,
    ) -> tuple[torch.Tensor, Any]:
        """All forward passes of the step: ``(pred of the labelled inputs, outputs for unlabelled_loss)``.

        The default runs the network on the labelled inputs only; methods with unlabelled forward passes override
        it (they may call it through ``super()`` for ``pred``).
        """
        return engine.inferer(inputs, engine.network, *args, **kwargs), None

    def unlabelled_loss(
        self,
        engine: SemiSupervisedTrainer,
        sup_loss: torch.Tensor,
        unlabelled: list[Any],
        unlabelled_outputs: Any,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """``(total loss of the semi-supervised step, terms for engine.state.output)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement unlabelled_loss().")

    def on_semi_supervised_start(self, engine: SemiSupervisedTrainer) -> None:
        """Called when the first semi-supervised epoch starts from its beginning."""

    def after_step(self, engine: SemiSupervisedTrainer) -> dict[str, Any]:
        """Called after the backward pass and optimizer step of every semi-supervised iteration; returns terms
        for ``engine.state.output``."""
        return {}

    # ---------------------------------------------------------------------------------------- epoch handling

    def _on_epoch_started(self, engine: SemiSupervisedTrainer) -> None:
        """Set the phase's epoch length and data; call ``on_semi_supervised_start`` when the phase starts."""
        epoch = engine.state.epoch - 1
        semi = self.is_semi_epoch(epoch)
        offset, self._resume_offset = self._resume_offset, 0
        self._epoch_start_iteration = engine.state.iteration - offset
        engine.state.epoch_length = self.semi_epoch_length if semi else self.warmup_epoch_length
        loader = self.semi_data_loader if semi else self.data_loader
        _set_sampler_epoch(loader, engine.state.epoch)
        engine.set_data(loader)
        # ignite counts the iterations of the epoch from `_init_iter` (its own resume counter, which it would
        # otherwise set to iteration % epoch_length, wrong when the epoch lengths differ)
        engine._init_iter = offset
        if semi:
            self._unlabelled_iters = [None] * len(self.unlabelled_data_loaders)
            if epoch == self.warmup_epochs and offset == 0:
                self.on_semi_supervised_start(engine)

    @staticmethod
    def _is_done(state: State) -> bool:
        """Ignite's stop test without its ``iteration >= epoch_length * max_epochs`` clause, which is wrong when
        the epoch length changes during the run."""
        if state.max_iters is not None and state.iteration >= state.max_iters:
            return True
        return state.max_epochs is not None and state.epoch >= state.max_epochs

    def _next_unlabelled(self, index: int) -> Any:
        """Next batch of unlabelled loader ``index``, starting a new pass when it is exhausted."""
        loader = self.unlabelled_data_loaders[index]
        for _ in range(2):
            if self._unlabelled_iters[index] is None:
                _set_sampler_epoch(loader, self._unlabelled_passes[index])
                self._unlabelled_passes[index] += 1
                self._unlabelled_iters[index] = iter(loader)
            try:
                return next(self._unlabelled_iters[index])
            except StopIteration:
                self._unlabelled_iters[index] = None
        raise ValueError(f"unlabelled_data_loaders[{index}] yielded no batch.")

    # ----------------------------------------------------------------------------------------- checkpointing

    def state_dict(self) -> OrderedDict:
        """Ignite's engine state (with ``state_dict_user_keys``) plus ``current_epoch`` and ``epoch_iteration``."""
        state = super().state_dict()
        state["current_epoch"] = int(self.state.epoch)
        state["epoch_iteration"] = int(self.state.iteration - self._epoch_start_iteration)
        return state

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore a ``state_dict`` of this trainer: iteration, user keys, and the epoch and position in it.

        Ignite would take the epoch as ``iteration // epoch_length``, wrong once the two phases differ in length;
        the epoch is restored from ``current_epoch`` and ``epoch_iteration`` instead. An epoch that was
        interrupted resumes with its remaining iterations (from a fresh pass of its loader, as ignite does).
        """
        missing = [k for k in (*_RESUME_KEYS, "iteration", "epoch_length") if k not in state_dict]
        if missing:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: checkpoint state lacks {missing}; "
                f"it must come from {type(self).__name__}.state_dict()."
            )
        current_epoch = int(state_dict["current_epoch"])
        done = int(state_dict["epoch_iteration"])
        finished = done >= int(state_dict["epoch_length"])
        completed = current_epoch if finished else max(current_epoch - 1, 0)
        base = {k: v for k, v in state_dict.items() if k not in (*_RESUME_KEYS, "iteration")}
        base["epoch"] = completed
        super().load_state_dict(base)
        self.state.iteration = int(state_dict["iteration"])
        self._resume_offset = 0 if finished else done
        self._epoch_start_iteration = self.state.iteration - self._resume_offset

    # --------------------------------------------------------------------------------------------- iteration

    def _iteration(  # type: ignore[override]
        self, engine: SemiSupervisedTrainer, batchdata: dict[str, torch.Tensor]
    ) -> dict:
        """One warm-up or semi-supervised step; returns ``engine.state.output``.

        Raises:
            ValueError: When ``batchdata`` is None.
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
        semi = self.is_semi_epoch(engine.state.epoch - 1)
        unlabelled = (
            [self.prepare_unlabelled(engine, self._next_unlabelled(i)) for i in range(len(self._unlabelled_iters))]
            if semi
            else None
        )
        if engine.compile:  # torch.compile and MetaTensor do not mix (see SupervisedTrainer)
            inputs = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs

        engine.state.output = {CommonKeys.IMAGE: inputs, CommonKeys.LABEL: targets}
        acc = engine.accumulation_steps
        local_iter = engine.state.iteration - self._epoch_start_iteration - 1  # 0-based within the epoch
        should_zero_grad = local_iter % acc == 0
        should_step = (local_iter + 1) % acc == 0 or (local_iter + 1) == engine.state.epoch_length

        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        use_amp = engine.amp and engine.scaler is not None
        with torch.autocast("cuda", **engine.amp_kwargs) if use_amp else nullcontext():
            pred, unlabelled_outputs = self.forward(engine, inputs, unlabelled, args, kwargs)
            engine.state.output[CommonKeys.PRED] = pred
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            sup_loss = engine.loss_function(pred, targets).mean()
            if semi:
                loss, terms = self.unlabelled_loss(engine, sup_loss, unlabelled, unlabelled_outputs)
                terms = dict(terms)
            else:
                loss, terms = sup_loss, dict.fromkeys(self.unlabelled_output_keys, 0.0)
            engine.state.output[CommonKeys.LOSS] = loss
            engine.fire_event(IterationEvents.LOSS_COMPLETED)

        scaled = loss / acc if acc > 1 else loss
        if use_amp:
            engine.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if should_step:
            self._clip_and_step(engine, use_amp)
        if semi:
            terms.update(self.after_step(engine))

        engine.state.output[SemiSupervisedKeys.SUP_LOSS] = sup_loss.detach()
        engine.state.output.update(terms)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _clip_and_step(self, engine: SemiSupervisedTrainer, use_amp: bool) -> None:
        """Clip the gradients (unscaled first under AMP) and step the optimizer (through the scaler under AMP)."""
        if use_amp:
            if self.clip_grad_norm is not None:
                engine.scaler.unscale_(engine.optimizer)
                torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.clip_grad_norm)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(engine.network.parameters(), self.clip_grad_norm)
            engine.optimizer.step()
