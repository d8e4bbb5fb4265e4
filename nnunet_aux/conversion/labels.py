"""How a source dataset's labels become the labels of a scale-decomposed dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..dataset_format import make_scale_dataset_json
from ..errors import InputError
from ..validation import MAX_LABEL_VALUE, check_label_value, check_n_scales, label_dtype


@dataclass(frozen=True)
class LabelPlan:
    """Renumbering of a source label map into scale labels plus the other structures.

    Attributes
    ----------
    structure : str
        Name of the decomposed structure.
    structure_value : int
        Its value in the source label maps.
    n_scales : int
        Number of scales ``S``; they take output values ``1..S``.
    other_labels : tuple of str
        Other structures, in source order; output values ``S + 1, ...``.
    ignore : bool
        Whether the source has nnU-Net's ignore label (kept last).
    source_values : tuple of int
        Every value allowed in a source label map (background and ignore included).
    lut : ndarray of uint8 (uint16 where more than 255 output values are needed)
        ``lut[source value]`` is the output value; 0 for the structure, whose voxels get
        their scale instead.
    regions_class_order : tuple of int
        Value each output region is predicted as (structure first): a value inside the
        region (the smallest scale, ``1``, for the structure; its own value for every other
        label), so that nnU-Net's own evaluation reads predictions right. ``nnunet_aux
        map-labels`` takes predictions back to the source's values.
    """

    structure: str
    structure_value: int
    n_scales: int
    other_labels: tuple[str, ...]
    ignore: bool
    source_values: tuple[int, ...]
    lut: np.ndarray
    regions_class_order: tuple[int, ...]

    def mapping(self) -> dict[str, Any]:
        """Source value to output value(s), for the report."""
        out: dict[str, Any] = {}
        for v in self.source_values:
            out[str(v)] = list(range(1, self.n_scales + 1)) if v == self.structure_value else int(self.lut[v])
        return out

    def dataset_json(self, num_training: int, **kwargs: Any) -> dict:
        """dataset.json of the output (see :func:`nnunet_aux.dataset_format.make_scale_dataset_json`)."""
        return make_scale_dataset_json(
            num_training, self.n_scales, structure=self.structure, other_labels=self.other_labels,
            ignore=self.ignore, regions_class_order=self.regions_class_order, **kwargs,
        )

    def check_values(self, label: np.ndarray, source: str) -> None:
        """Stop when a label map holds a value the source dataset.json does not declare."""
        present = np.unique(label)
        unknown = sorted(set(present.tolist()) - set(self.source_values))
        if unknown:
            raise InputError(
                f"{source}: label values {unknown} are not declared in the source dataset.json "
                f"(declared: {list(self.source_values)})"
            )

    def relabel(self, label: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Output label map from a source label map and the structure's scale map.

        Parameters
        ----------
        label : ndarray of int
            Source label map (values checked with :meth:`check_values`).
        scales : ndarray of uint8
            ``1..S`` on the structure's voxels (other voxels are not read).

        Returns
        -------
        out : ndarray of uint8, or uint16 where the output values need it
        """
        out = self.lut[label]
        structure = label == self.structure_value
        scales = np.asarray(scales)
        if np.any(scales[structure] == 0) or np.any(scales[structure] > self.n_scales):
            raise ValueError("every structure voxel needs a scale in 1..S")
        out[structure] = scales[structure]
        return out


def plan_labels(source_labels: Mapping[str, Any], structure: str, n_scales: int,
                source: str = "dataset.json") -> LabelPlan:
    """Plan the renumbering of a source dataset's labels.

    Parameters
    ----------
    source_labels : mapping
        The ``labels`` entry of the source dataset.json (name to value). Region labels
        (lists) are not supported.
    structure : str
        Name of the label to decompose into scales (e.g. ``"vessel"``; matched without
        regard to case if there is no exact match).
    n_scales : int
        Number of scales.
    source : str, optional
        Where the labels come from, for error messages.

    Returns
    -------
    plan : LabelPlan

    Examples
    --------
    >>> plan = plan_labels({"background": 0, "Vessel": 1, "Tumour": 2}, "vessel", 3)
    >>> plan.other_labels, plan.lut.tolist(), plan.regions_class_order
    (('Tumour',), [0, 0, 4], (1, 4))
    """
    n_scales = check_n_scales(n_scales)
    if not isinstance(source_labels, Mapping) or not source_labels:
        raise InputError(f"{source}: 'labels' must be an object of label names and values, got {source_labels!r}")
    if "background" not in source_labels:
        raise InputError(f"{source}: labels have no 'background' entry")
    values: dict[str, int] = {}
    for name, value in source_labels.items():
        if isinstance(value, (list, tuple)):
            raise InputError(
                f"{source}: label {name!r} is a region {list(value)}; region-based source datasets are "
                f"not supported (give a dataset with one value per label)"
            )
        values[name] = check_label_value(value, f"{source}: label {name!r}")
    if values["background"] != 0:
        raise InputError(f"{source}: background must be 0, got {values['background']}")
    if structure not in values:
        matches = [n for n in values if n.lower() == structure.lower()]
        if len(matches) != 1:
            choices = [n for n in values if n not in ("background", "ignore")]
            raise InputError(f"{source}: no label named {structure!r}; labels are {choices}")
        structure = matches[0]
    if structure in ("background", "ignore"):
        raise InputError(f"cannot decompose the {structure!r} label")
    if len(set(values.values())) != len(values):
        raise InputError(f"{source}: two labels share a value: {values}")
    others = sorted((v, n) for n, v in values.items() if n not in ("background", "ignore", structure))
    other_labels = tuple(n for _, n in others)
    ignore = "ignore" in values
    n_out = n_scales + len(other_labels) + (1 if ignore else 0)
    if n_out > MAX_LABEL_VALUE:
        raise InputError(f"{n_scales} scales and {n_out - n_scales} other labels make {n_out} output label values, "
                         f"more than nnU-Net's {MAX_LABEL_VALUE}")
    lut = np.zeros(max(values.values()) + 1, dtype=label_dtype(n_out))
    for i, (v, _) in enumerate(others):
        lut[v] = n_scales + 1 + i
    if ignore:
        lut[values["ignore"]] = n_scales + 1 + len(other_labels)
    return LabelPlan(
        structure=structure,
        structure_value=values[structure],
        n_scales=int(n_scales),
        other_labels=other_labels,
        ignore=ignore,
        source_values=tuple(sorted(values.values())),
        lut=lut,
        regions_class_order=(1, *(n_scales + 1 + i for i in range(len(others)))),
    )
