"""Conversion of datasets into scale-decomposed nnU-Net raw datasets.

- :func:`write_synthetic_dataset`: synthetic vessel trees;
- :func:`decompose_dataset`: any nnU-Net raw dataset with a vessel label;
- :func:`make_multiclass_dataset`: the multi-class baseline variant;
- :func:`convert_msd_hepaticvessel`, :func:`convert_ircadb`: public datasets;
- :func:`make_images_only_dataset`: unlabelled images (dummy labels) for self-supervised
  pretraining.

All write into a temporary folder that is renamed at the end, never replace an existing
dataset ID unless asked, copy the source geometry into every file and leave
``scale_decomposition_report.json`` beside ``dataset.json``. The data contract is in
:mod:`nnunet_aux.dataset_format`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use so that importing the package (e.g. for the command
# line's help) does not load SimpleITK and the decomposition code.
_EXPORTS = {
    "DecompositionSettings": "writer",
    "write_scale_dataset": "writer",
    "write_synthetic_dataset": "synthetic",
    "decompose_dataset": "raw_dataset",
    "make_multiclass_dataset": "multiclass",
    "convert_msd_hepaticvessel": "msd",
    "convert_ircadb": "ircadb",
    "read_dicom_series": "dicom",
    "plan_labels": "labels",
    "make_images_only_dataset": "images_only",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
