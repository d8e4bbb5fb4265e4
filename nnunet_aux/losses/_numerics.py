"""Numerical helpers shared by the losses: float32 arithmetic and graph-attached zeros."""

from __future__ import annotations

import contextlib

import torch


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """Context in which autocast is off on ``device``.

    Under ``torch.autocast`` a matmul of float32 inputs still runs in float16/bfloat16;
    similarities divided by a temperature and exponentiated lose too much there, so the
    losses cast their inputs to float32 and do their arithmetic inside this context.
    Gradients still flow back to the low-precision inputs through the casts.
    """
    if not torch.amp.is_autocast_available(device.type):
        # Devices without autocast never lower precision; nothing to switch off.
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def attached_zero(*tensors: torch.Tensor) -> torch.Tensor:
    """A float32 scalar 0 that depends on every tensor given.

    Returned when a loss has nothing to compare (a class missing, an empty draw) so
    that the backward pass still reaches every head; DDP expects each rank to produce
    gradients for the same parameters. Only one element of each tensor is used:
    ``tensor.sum() * 0`` would read the whole tensor and, in float16, can overflow to
    ``inf`` and turn the zero into NaN.
    """
    zero = torch.zeros((), dtype=torch.float32, device=tensors[0].device)
    for tensor in tensors:
        zero = zero + (tensor.reshape(-1)[:1].float() * 0).sum()
    return zero
