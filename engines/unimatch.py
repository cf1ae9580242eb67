"""UniMatch training (Yang et al., CVPR 2023, "Revisiting Weak-to-Strong Consistency in Semi-Supervised Semantic
Segmentation", LiheYoung/UniMatch ``more-scenarios/medical/unimatch.py``), as the FUGC 2025 7th-place solution
(apuomline/FUGC2025_7th_solution, ``semi_supervised_unimatch.py``) runs it.

``UniMatchTrainer`` is a ``engines.semi_supervised.SemiSupervisedTrainer`` that overrides two hooks, ``forward``
and ``unlabelled_loss``; per iteration it takes a labelled batch and two unlabelled batches, ``u`` (trained on)
and ``mix`` (a second shuffle of the unlabelled set: the CutMix sources). The data pipeline makes the views
(``transforms.unimatch.unimatch_strong_views``): every unlabelled item carries its weak view, two strong views
and one CutMix box per strong view. The step:

1. the network in eval mode, without gradients, predicts ``mix``'s weak view: its pseudo-labels (argmax) and
   confidences (max softmax);
2. inside each of ``u``'s boxes the same strong view of ``mix`` is pasted into ``u``'s strong view;
3. in train mode ``network.encode`` runs once on the labelled and weak images together, and ``network.decode``
   on those features and on a Dropout2d(0.5) copy of every feature map, concatenated along the batch (the
   feature-perturbed branch, "fp"); then the network runs on both strong views together;
4. pseudo-labels of ``u`` = argmax of its (detached) weak prediction, confidence = max softmax; for each strong
   view, inside its box, the labels and confidences of ``mix`` replace them; pixels with confidence below
   ``conf_threshold`` (0.95) are ignored;
5. ``loss = loss_scale * (sup_loss + sum_i strong_weights[i] * L(s_i) + fp_weight * L(fp))``, UniMatch's
   ``(L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2``, with ``L`` the ignore-masked unlabelled loss (in the
   medical UniMatch and the FUGC solution a Dice, ``losses.unimatch.IgnoreMaskDiceLoss``) and ``sup_loss`` the
   trainer's ``loss_function`` on the labelled batch ((CE + Dice) / 2, ``losses.unimatch.unimatch_supervised_loss``).

Networks provide ``encode(x) -> list of feature maps`` and ``decode(features) -> logits`` besides
``forward(x) = decode(encode(x))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from engines.ema import unwrap_network
from engines.semi_supervised import SemiSupervisedKeys, SemiSupervisedTrainer
from transforms.unimatch import cutmix

__all__ = ["UniMatchKeys", "UniMatchTrainer"]


class UniMatchKeys(SemiSupervisedKeys):
    """Keys of ``engine.state.output`` written by ``UniMatchTrainer`` besides MONAI's image/label/pred/loss.

    The supervised loss of the labelled batch (UniMatch's ``loss_x``) is ``SemiSupervisedKeys.SUP_LOSS``; the
    unlabelled terms are 0.0 in warm-up epochs.
    """

    LOSS_FP = "loss_fp"  # unlabelled loss of the feature-perturbed branch (before weighting)
    MASK_RATIO = "mask_ratio"  # fraction of the weak view's pixels whose confidence reaches the threshold

    @staticmethod
    def loss_strong(index: int) -> str:
        """Key of the unlabelled loss of strong view ``index`` (0-based): ``loss_s1``, ``loss_s2``, ..."""
        return f"loss_s{index + 1}"


class UniMatchTrainer(SemiSupervisedTrainer):
    """UniMatch on top of ``SemiSupervisedTrainer`` (module doc; defaults are UniMatch's and the FUGC solution's).

    Unlabelled batches are dicts with ``weak_key`` (the weak view, the network's input), each of ``strong_keys``
    and each of ``box_keys`` (CutMix boxes ``(B, 1, H, W)`` or ``(B, H, W)``, bool or {0, 1}, one per strong
    view). ``engine.state.output`` gets ``sup_loss``, ``loss_s1``, ``loss_s2``, ... (one per strong view),
    ``loss_fp`` and ``mask_ratio`` (``UniMatchKeys``), e.g. for
    ``monai.handlers.from_engine(["loss", "sup_loss", "loss_s1", "loss_s2", "loss_fp", "mask_ratio"], first=True)``.

    The ``inferer`` runs the ``mix`` and strong-view passes through ``network`` itself (a
    ``DistributedDataParallel`` wrapper included: its forward prepares the gradient reduction of the step); the
    labelled + weak pass calls ``encode``/``decode`` of the unwrapped network. UniMatch has no teacher and no
    per-step state: the trainer's checkpoint state is the base's.

    Args:
        device: device of the run.
        max_epochs: number of epochs.
        train_data_loader: labelled loader (cycled within a semi-supervised epoch when shorter than ``u``).
        network: network with ``encode`` and ``decode`` (possibly wrapped in DDP or ``torch.compile``).
        optimizer: its optimizer.
        loss_function: supervised loss ``loss_function(logits, labels)`` of the labelled batch.
        unlabelled_data_loader: loader of the unlabelled batches trained on (``u``); its length is the epoch's.
        mix_data_loader: loader of the CutMix source batches (``mix``), a second shuffle of the unlabelled set.
        unlabelled_loss_function: ``loss(logits, pseudo_labels (B, H, W), mask (B, H, W) bool) -> scalar``,
            counting only the pixels of ``mask``, e.g. ``losses.unimatch.IgnoreMaskDiceLoss``.
        conf_threshold: pseudo-labels of lower confidence (max softmax) are ignored.
        strong_weights: weight of each strong view's loss (one per ``strong_keys`` entry).
        fp_weight: weight of the feature-perturbed branch's loss.
        loss_scale: factor of the whole sum (UniMatch divides by 2).
        feature_dropout: channel dropout probability of the feature-perturbed branch (``Dropout2d``).
        weak_key: key of the weak view in unlabelled batches.
        strong_keys: keys of the strong views.
        box_keys: keys of their CutMix boxes, in the same order.
        warmup_epochs: supervised epochs before the semi-supervised ones (UniMatch: 0).
        max_unlabelled_ratio: see ``SemiSupervisedTrainer`` (UniMatch: None, an epoch is one pass of ``u``).
        kwargs: other ``SemiSupervisedTrainer`` / MONAI ``SupervisedTrainer`` arguments (``semi_epoch_length``,
            ``clip_grad_norm``, ``prepare_batch``, ``train_handlers``, ``amp``, ``accumulation_steps``, ...).

    Raises:
        ValueError: a network without ``encode``/``decode``, strong and box keys or weights of different
            counts, or invalid thresholds and probabilities; at a step, an unlabelled batch without a key.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        unlabelled_data_loader: Iterable | DataLoader,
        mix_data_loader: Iterable | DataLoader,
        unlabelled_loss_function: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
        conf_threshold: float = 0.95,
        strong_weights: Sequence[float] = (0.25, 0.25),
        fp_weight: float = 0.5,
        loss_scale: float = 0.5,
        feature_dropout: float = 0.5,
        weak_key: str = "image",
        strong_keys: Sequence[str] = ("image_s1", "image_s2"),
        box_keys: Sequence[str] = ("box_s1", "box_s2"),
        warmup_epochs: int = 0,
        max_unlabelled_ratio: float | None = None,
        **kwargs: Any,
    ) -> None:
        model = unwrap_network(network)
        if not (callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None))):
            raise ValueError(
                f"UniMatch needs a network with encode(x) -> features and decode(features) -> logits; "
                f"{type(model).__name__} lacks them."
            )
        if not len(strong_keys) == len(box_keys) == len(strong_weights) >= 1:
            raise ValueError(
                f"give one box key and one weight per strong view: strong_keys {list(strong_keys)}, box_keys "
                f"{list(box_keys)}, strong_weights {list(strong_weights)}."
            )
        if not 0.0 <= conf_threshold <= 1.0:
            raise ValueError(f"conf_threshold must be in [0, 1], got {conf_threshold}.")
        if not 0.0 <= feature_dropout < 1.0:
            raise ValueError(f"feature_dropout must be in [0, 1), got {feature_dropout}.")
        self.unlabelled_loss_function = unlabelled_loss_function
        self.conf_threshold = conf_threshold
        self.strong_weights = tuple(float(w) for w in strong_weights)
        self.fp_weight = fp_weight
        self.loss_scale = loss_scale
        self.feature_dropout = feature_dropout
        self.weak_key = weak_key
        self.strong_keys = tuple(strong_keys)
        self.box_keys = tuple(box_keys)
        self.unlabelled_output_keys = (
            *(UniMatchKeys.loss_strong(i) for i in range(len(self.strong_keys))),
            UniMatchKeys.LOSS_FP,
            UniMatchKeys.MASK_RATIO,
        )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            unlabelled_data_loaders=[unlabelled_data_loader, mix_data_loader],
            warmup_epochs=warmup_epochs,
            max_unlabelled_ratio=max_unlabelled_ratio,
            **kwargs,
        )

    def _check_batch(self, batch: dict, name: str) -> None:
        missing = [k for k in (self.weak_key, *self.strong_keys, *self.box_keys) if k not in batch]
        if missing:
            raise ValueError(f"{name} batch lacks {missing} (keys present: {sorted(batch)}).")

    # -------------------------------------------------------------------------------------------------- hooks

    def forward(
        self, engine: UniMatchTrainer, inputs: torch.Tensor, unlabelled: list[Any] | None, args: tuple, kwargs: dict
    ) -> tuple[torch.Tensor, Any]:
        """Labelled logits and ``{"weak", "fp", "strong": [...], "mix"}`` logits of the unlabelled passes."""
        if unlabelled is None:
            return super().forward(engine, inputs, unlabelled, args, kwargs)
        u, mix = unlabelled
        self._check_batch(u, "unlabelled")
        self._check_batch(mix, "CutMix source (mix)")
        network = engine.network
        with torch.no_grad():
            network.eval()
            pred_mix = engine.inferer(mix[self.weak_key], network)
            network.train()
        strong = [cutmix(u[s], mix[s], u[b]) for s, b in zip(self.strong_keys, self.box_keys)]

        model = unwrap_network(network)
        num_labelled = inputs.shape[0]
        features = model.encode(torch.cat([inputs, u[self.weak_key]]))
        perturbed = [F.dropout2d(f, self.feature_dropout, training=True) for f in features]
        clean, fp = model.decode([torch.cat([f, p]) for f, p in zip(features, perturbed)]).chunk(2)
        pred_strong = engine.inferer(torch.cat(strong), network).chunk(len(strong))
        outputs = {"weak": clean[num_labelled:], "fp": fp[num_labelled:], "strong": pred_strong, "mix": pred_mix}
        return clean[:num_labelled], outputs

    def unlabelled_loss(
        self, engine: UniMatchTrainer, sup_loss: torch.Tensor, unlabelled: list[Any], unlabelled_outputs: Any
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The weighted sum of step 5 (module doc) and its terms."""
        u, _ = unlabelled
        conf_weak, label_weak = unlabelled_outputs["weak"].detach().softmax(1).max(1)
        conf_mix, label_mix = unlabelled_outputs["mix"].detach().softmax(1).max(1)
        terms: dict[str, Any] = {}
        total = sup_loss
        for index, (pred, box_key, weight) in enumerate(
            zip(unlabelled_outputs["strong"], self.box_keys, self.strong_weights)
        ):
            box = u[box_key]
            label, conf = cutmix(label_weak, label_mix, box), cutmix(conf_weak, conf_mix, box)
            value = self.unlabelled_loss_function(pred, label, conf >= self.conf_threshold)
            total = total + weight * value
            terms[UniMatchKeys.loss_strong(index)] = value.detach()
        confident = conf_weak >= self.conf_threshold
        loss_fp = self.unlabelled_loss_function(unlabelled_outputs["fp"], label_weak, confident)
        total = self.loss_scale * (total + self.fp_weight * loss_fp)
        terms[UniMatchKeys.LOSS_FP] = loss_fp.detach()
        terms[UniMatchKeys.MASK_RATIO] = confident.float().mean()
        return total, terms
