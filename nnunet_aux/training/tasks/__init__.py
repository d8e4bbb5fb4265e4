"""Auxiliary tasks: one module each."""

from .scale import ScaleTask, default_scale_weights

__all__ = ["ScaleTask", "default_scale_weights"]
