"""MAGNET (CSV 2026, 4th place): two-view carotid plaque segmentation + morphology-guided risk classification.

MAGNET (lyyek/CSV2026, models/convnext_unet.py) rebuilt in native PyTorch from the pieces of :mod:`networks.encoders` and :mod:`networks.decoders`: one ConvNeXt
encoder (registry family ``"convnext"``) shared by the longitudinal and transverse views, an extra stride-2 stem
for an H/2 skip (ConvNeXt's first map is at H/4), one :class:`~networks.decoders.unet.UNetDecoder` + 1x1 conv head
per view, and a classification head fed by both views (plaque-weighted pooling of the bottleneck + 10
parameter-free morphology features of the detached segmentation). Unlike the original, the extra stem is trained
(its freeze rule there left it at random init, see the bundle's docs); ``handlers.freeze.FreezeForEpochs`` on
``MagnetNet.encoder`` freezes exactly the ConvNeXt encoder.

Not a :class:`networks.segmentation.SegmentationModel`: two decoders share one encoder pass, the extra stem runs
per view (it has BatchNorm), and the risk head reads both views.

Checkpoints written before the decoders moved to :mod:`networks.decoders` name the heads
``decoder_long.head.*`` / ``decoder_trans.head.*``; they load unchanged (renamed to ``head_long.*`` /
``head_trans.*`` on load by :func:`networks.checkpoint.rename_keys_on_load`).

I/O contract (CONTRIBUTING.md): ``forward(x: (B, 2, H, W)) -> (B, 2 * num_classes + 1, H, W)`` with channels
``[0:C]`` long-view logits, ``[C:2C]`` transverse-view logits and ``2C`` the risk logit broadcast over H, W;
:func:`split_views_output` takes it apart. One tensor in and out keeps the model scriptable and exportable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.checkpoint import rename_keys_on_load
from networks.decoders.unet import UNetDecoder
from networks.encoders import build_encoder, load_encoder_weights

__all__ = [
    "MagnetNet",
    "MorphologyFeatures",
    "RunningStandardize",
    "plaque_weighted_pool",
    "risk_logit",
    "split_views_output",
    "view_logits_as_batch",
]


class MorphologyFeatures(nn.Module):
    """The 10 parameter-free morphology features MAGNET derives from a segmentation (no gradient flows back).

    From ``pred = argmax(logits)`` and ``p = softmax(logits)`` of each image (``H x W``; class 0 is background,
    foreground = any other class), in this order:

    0. plaque area / (vessel area + 1e-6)
    1. plaque area / (foreground area + 1e-6)
    2. sum of ``p_plaque`` over the predicted plaque pixels
    3. plaque bounding-box height / H (height = last row - first row; 0 without plaque)
    4. plaque bounding-box width / W
    5. 2 (height + width) / (H + W) (approximate perimeter)
    6. sum of ``p_vessel`` over the predicted vessel pixels
    7. mean ``p_plaque`` over the predicted plaque pixels (0 without plaque)
    8. foreground area / (H W)
    9. plaque area / (H W)

    Args:
        plaque_index: class index of plaque.
        vessel_index: class index of vessel.
    """

    num_features: int = 10

    def __init__(self, plaque_index: int = 1, vessel_index: int = 2) -> None:
        super().__init__()
        self.plaque_index = plaque_index
        self.vessel_index = vessel_index

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, C, H, W) -> features (B, 10), computed on ``logits.detach()``."""
        logits = logits.detach()
        probs = torch.softmax(logits, dim=1)
        pred = torch.argmax(logits, dim=1)
        height, width = logits.shape[2], logits.shape[3]
        plaque = (pred == self.plaque_index).to(logits.dtype)
        vessel = (pred == self.vessel_index).to(logits.dtype)
        foreground = (pred > 0).to(logits.dtype)
        plaque_area = plaque.sum(dim=(1, 2))
        vessel_area = vessel.sum(dim=(1, 2))
        fg_area = foreground.sum(dim=(1, 2))
        has_plaque = plaque_area > 0
        plaque_conf = (probs[:, self.plaque_index] * plaque).sum(dim=(1, 2))
        vessel_conf = (probs[:, self.vessel_index] * vessel).sum(dim=(1, 2))
        bbox_h = _extent(plaque.amax(dim=2), has_plaque)
        bbox_w = _extent(plaque.amax(dim=1), has_plaque)
        mean_plaque_conf = torch.where(has_plaque, plaque_conf / (plaque_area + 1e-6), torch.zeros_like(plaque_conf))
        pixels = height * width
        features = [
            plaque_area / (vessel_area + 1e-6),
            plaque_area / (fg_area + 1e-6),
            plaque_conf,
            bbox_h / height,
            bbox_w / width,
            2.0 * (bbox_h + bbox_w) / (height + width),
            vessel_conf,
            mean_plaque_conf,
            fg_area / pixels,
            plaque_area / pixels,
        ]
        return torch.stack(features, dim=1)


def _extent(occupied: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Last minus first index of the non-zero entries of each row of ``occupied`` (B, N); 0 where not ``valid``."""
    n = occupied.shape[1]
    index = torch.arange(n, device=occupied.device, dtype=occupied.dtype).expand_as(occupied)
    last = torch.where(occupied > 0, index, torch.zeros_like(index)).amax(dim=1)
    first = torch.where(occupied > 0, index, torch.full_like(index, n)).amin(dim=1)
    return torch.where(valid, last - first, torch.zeros_like(last))


class RunningStandardize(nn.Module):
    """Standardise each feature by running estimates of its mean and variance over the training cases.

    ``y = (x - running_mean) / sqrt(running_var + eps)``, always with the running estimates (in training they are
    first updated from the batch, without gradient, with ``momentum``), so unlike ``BatchNorm1d`` the output does
    not depend on the other cases of a batch of 2. Not part of MAGNET: an option of :class:`MagnetNet` for the
    risk head's inputs, whose per-case variation can be a few per cent of a case-independent offset that the
    head's LayerNorms (per case, over features) do not remove (measured in the bundle's docs).

    Args:
        num_features: size of the last axis of the input (B, num_features).
        momentum: weight of the batch in each update of the running estimates.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, momentum: float = 0.05, eps: float = 1e-5) -> None:
        super().__init__()
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                batch = x.detach().float()
                self.running_mean.lerp_(batch.mean(dim=0), self.momentum)
                if batch.shape[0] > 1:
                    self.running_var.lerp_(batch.var(dim=0, unbiased=False), self.momentum)
        return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)


def plaque_weighted_pool(
    features: torch.Tensor, logits: torch.Tensor, plaque_index: int = 1, alpha: float = 1.0
) -> torch.Tensor:
    """Global average pooling of ``features`` (B, F, h, w) weighted by ``w = 1 + alpha * p_plaque``.

    ``p_plaque`` is the softmax of the DETACHED segmentation ``logits`` (B, C, H, W), bilinearly resized to
    ``(h, w)``; returns ``sum(w f) / sum(w)`` of shape (B, F). Gradients reach ``features`` only.
    """
    p_plaque = torch.softmax(logits.detach(), dim=1)[:, plaque_index : plaque_index + 1]
    p_plaque = F.interpolate(p_plaque, size=features.shape[-2:], mode="bilinear", align_corners=False)
    weights = 1.0 + alpha * p_plaque
    return (features * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp_min(1e-6)


class MagnetNet(nn.Module):
    """MAGNET: shared ConvNeXt encoder, per-view UNet decoders, morphology-guided two-view risk head.

    Args:
        in_channels: channels of ONE view (the input carries ``2 * in_channels``: long view first).
        num_classes: segmentation classes (0 background, plus ``plaque_index`` and ``vessel_index``).
        depths: ConvNeXt blocks per stage (nano: 2, 2, 8, 2).
        dims: ConvNeXt widths per stage (nano: 80, 160, 320, 640).
        conv_mlp: ConvNeXt 1x1-conv MLP (True for timm atto..nano).
        drop_path_rate: ConvNeXt stochastic depth.
        plaque_index: class index of plaque (pooling weight and morphology features).
        vessel_index: class index of vessel (morphology features).
        plaque_gate_alpha: ``alpha`` of the pooling weight ``1 + alpha * p_plaque``.
        morph_dim: width of the shared projection of the 10 morphology features.
        cls_hidden: hidden widths of the classification MLP (each Linear -> LayerNorm -> ReLU -> Dropout).
        cls_dropout: dropout of the classification MLP.
        standardize_cls_inputs: standardise the head's input vector by running statistics over the training
            cases (:class:`RunningStandardize`) before the MLP. Not in MAGNET (default False); the CPU demo
            turns it on (see the bundle's docs).
        pretrained_path: local timm ConvNeXt checkpoint loaded into the encoder (stem adapted to ``in_channels``
            by :func:`networks.encoders.load_encoder_weights`); random init when ``None``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        depths: Sequence[int] = (2, 2, 8, 2),
        dims: Sequence[int] = (80, 160, 320, 640),
        conv_mlp: bool = True,
        drop_path_rate: float = 0.0,
        plaque_index: int = 1,
        vessel_index: int = 2,
        plaque_gate_alpha: float = 1.0,
        morph_dim: int = 64,
        cls_hidden: Sequence[int] = (512, 256),
        cls_dropout: float = 0.3,
        standardize_cls_inputs: bool = False,
        pretrained_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        for name, index in (("plaque_index", plaque_index), ("vessel_index", vessel_index)):
            if not 0 < index < num_classes:
                raise ValueError(f"{name}={index} must be a foreground class in [1, {num_classes})")
        if plaque_index == vessel_index:
            raise ValueError(f"plaque_index and vessel_index must differ, both are {plaque_index}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.plaque_index = plaque_index
        self.plaque_gate_alpha = float(plaque_gate_alpha)

        self.encoder = build_encoder(
            "convnext",
            in_channels=in_channels,
            depths=depths,
            dims=dims,
            conv_mlp=conv_mlp,
            drop_path_rate=drop_path_rate,
        )
        if pretrained_path is not None:
            load_encoder_weights(self.encoder, pretrained_path)
        self.extra_stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(dims[0]),
            nn.ReLU(inplace=True),
        )
        skip_channels = (dims[0], *self.encoder.out_channels)
        skip_reductions = ((2, 2), *self.encoder.reductions)
        # MAGNET: each stage's width is the next-shallower skip's, the last max(32, dims[0] // 2)
        decoder_channels = (*skip_channels[1:-1][::-1], max(32, dims[0] // 2))
        # created decoder, head, decoder, head: the order of the random initialisation (and of the parameters
        # in the optimizer state) of the checkpoints written before the heads left the decoders
        self.decoder_long = UNetDecoder(skip_channels, skip_reductions, decoder_channels)
        self.head_long = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=1)
        self.decoder_trans = UNetDecoder(skip_channels, skip_reductions, decoder_channels)
        self.head_trans = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=1)
        rename_keys_on_load(self, {"decoder_long.head.": "head_long.", "decoder_trans.head.": "head_trans."})

        self.morphology = MorphologyFeatures(plaque_index, vessel_index)
        self.morph_proj = nn.Sequential(
            nn.LayerNorm(MorphologyFeatures.num_features),
            nn.Linear(MorphologyFeatures.num_features, morph_dim),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        width = 2 * dims[-1] + 2 * morph_dim
        for hidden in cls_hidden:
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True), nn.Dropout(cls_dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.cls_head = nn.Sequential(*layers)
        # created after the head and without parameters: the default network's keys and seeded initial weights
        # are those of MAGNET's head either way
        self.cls_input_norm = RunningStandardize(2 * dims[-1] + 2 * morph_dim) if standardize_cls_inputs else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, 2 * in_channels, H, W) -> (B, 2 * num_classes + 1, H, W), see the module docstring."""
        if x.shape[1] != 2 * self.in_channels:
            raise ValueError(
                "MagnetNet expects (B, 2 * in_channels, H, W) = [long view, transverse view], got "
                + str(list(x.shape))
            )
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        x_long, x_trans = x[:, : self.in_channels], x[:, self.in_channels :]
        # ConvNeXt uses LayerNorm only, so one pass over both views stacked in the batch equals two passes;
        # the extra stem has BatchNorm and sees each view on its own, as in the original.
        feats = self.encoder(torch.cat([x_long, x_trans], dim=0))
        skips_long = [self.extra_stem(x_long)] + [f[:batch] for f in feats]
        skips_trans = [self.extra_stem(x_trans)] + [f[batch:] for f in feats]
        seg_long = F.interpolate(
            self.head_long(self.decoder_long(skips_long)), size=(height, width), mode="bilinear", align_corners=False
        )
        seg_trans = F.interpolate(
            self.head_trans(self.decoder_trans(skips_trans)),
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )
        emb_long = plaque_weighted_pool(skips_long[-1], seg_long, self.plaque_index, self.plaque_gate_alpha)
        emb_trans = plaque_weighted_pool(skips_trans[-1], seg_trans, self.plaque_index, self.plaque_gate_alpha)
        morph_long = self.morph_proj(self.morphology(seg_long))
        morph_trans = self.morph_proj(self.morphology(seg_trans))
        cls_input = torch.cat([emb_long, emb_trans, morph_long, morph_trans], dim=1)
        if self.cls_input_norm is not None:
            cls_input = self.cls_input_norm(cls_input)
        cls_logit = self.cls_head(cls_input)
        cls_map = cls_logit.reshape(batch, 1, 1, 1).expand(batch, 1, height, width)
        return torch.cat([seg_long, seg_trans, cls_map], dim=1)


def split_views_output(
    out: torch.Tensor, num_classes: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split a :class:`MagnetNet` output (B, 2C + 1, H, W) into long logits (B, C, H, W), transverse logits
    (B, C, H, W) and the risk logit (B,)."""
    if out.ndim != 4 or out.shape[1] != 2 * num_classes + 1:
        raise ValueError(
            f"expected a MagnetNet output of shape (B, {2 * num_classes + 1}, H, W) for num_classes={num_classes}, "
            f"got {tuple(out.shape)}"
        )
    return out[:, :num_classes], out[:, num_classes : 2 * num_classes], out[:, 2 * num_classes, 0, 0]


def view_logits_as_batch(out: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """Segmentation logits of both views of a :class:`MagnetNet` output as one batch (2B, C, H, W): all long
    views, then all transverse views, as MAGNET concatenates them for its losses."""
    long_logits, trans_logits, _ = split_views_output(out, num_classes)
    return torch.cat([long_logits, trans_logits], dim=0)


def risk_logit(out: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """The risk logit (B,) of a :class:`MagnetNet` output."""
    return split_views_output(out, num_classes)[2]
