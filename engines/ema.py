"""A teacher network that follows a student by an exponential moving average (EMA) of its parameters.

The schedule is Mean Teacher's (Tarvainen & Valpola 2017) as MAGNET (CSV 2026, 4th place) and SSL4MIS implement
it: after update ``t`` (0-based) the teacher is ``alpha_t * teacher + (1 - alpha_t) * student`` with
``alpha_t = min(1 - 1 / (t + 1), decay)``, so the first update copies the student and the decay then grows
towards ``decay``.

Ignite's ``ignite.handlers.EMAHandler`` does not reproduce this, hence this small class:

* its momentum warm-up (``EMAWarmUp``) is linear in the iteration, not ``1 / (t + 1)``, and its momentum must lie
  in (0, 1), which excludes the first update's copy;
* its buffers are either copied from the student at every update (``"copy"``), averaged (``"update"``) or left to
  a teacher in train mode (``"ema_train"``); MAGNET keeps the teacher in eval mode with the BatchNorm statistics
  it copied at the reset;
* its step counter lives in a ``LambdaStateScheduler`` that is not part of the trainer's ``state_dict``, so a
  resumed run would restart the warm-up, and it updates from the first event on, while Mean Teacher resets the
  teacher and starts counting when its phase begins.

The step ``t`` is the caller's (a trainer keeps it in its checkpointed state); this class only holds the teacher.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EMATeacher", "unwrap_network"]


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


class EMATeacher:
    """EMA teacher of a student network.

    The teacher is a separate instance of the student's architecture (not wrapped in DDP): its parameters get
    ``requires_grad=False`` and it stays in eval mode. Checkpoint it as a plain network (``network``).
    The student given to :meth:`reset` and :meth:`update` may be wrapped in ``DistributedDataParallel``/
    ``DataParallel`` or compiled; the unwrapped module is read.

    Args:
        network: the teacher network.
        decay: upper bound of the EMA decay ``alpha``, in [0, 1].
        average_buffers: also average floating-point buffers (BatchNorm statistics) the same way and copy integer
            ones; False (MAGNET) leaves them as copied at the last :meth:`reset`.
    """

    def __init__(self, network: nn.Module, decay: float = 0.996, average_buffers: bool = False) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}.")
        self.network = network
        self.decay = decay
        self.average_buffers = average_buffers
        self.network.requires_grad_(False)
        self.network.eval()

    def alpha(self, step: int) -> float:
        """EMA decay of update ``step`` (0-based): ``min(1 - 1 / (step + 1), decay)``."""
        return min(1.0 - 1.0 / (step + 1), self.decay)

    def check_student(self, student: nn.Module) -> None:
        """Raise ValueError unless ``student`` is another instance with the teacher's parameter names and shapes."""
        student = unwrap_network(student)
        if student is self.network:
            raise ValueError("the teacher must be a separate instance of the student's architecture.")
        own = {k: v.shape for k, v in student.named_parameters()}
        teacher = {k: v.shape for k, v in self.network.named_parameters()}
        if own != teacher:
            differ = sorted(k for k in own.keys() | teacher.keys() if own.get(k) != teacher.get(k))
            raise ValueError(
                "the teacher must have the student's architecture; parameters that differ in name or shape: "
                f"{differ[:5]}{' ...' if len(differ) > 5 else ''}"
            )

    @torch.no_grad()
    def reset(self, student: nn.Module) -> None:
        """Copy the student's parameters and buffers into the teacher."""
        self.network.load_state_dict(unwrap_network(student).state_dict())

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """EMA update number ``step`` (0-based) of the teacher towards ``student``; returns the ``alpha`` used."""
        alpha = self.alpha(step)
        student = unwrap_network(student)
        for t, s in zip(self.network.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
        if self.average_buffers:
            for t, s in zip(self.network.buffers(), student.buffers()):
                if t.is_floating_point():
                    t.mul_(alpha).add_(s, alpha=1.0 - alpha)
                else:
                    t.copy_(s)
        return alpha
