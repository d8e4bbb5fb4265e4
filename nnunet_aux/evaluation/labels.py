"""Which labels or regions to evaluate, and which values they have in reference and prediction.

Two sources:

- ``--labels vessel=1 tumour=2`` (:func:`parse_label_arguments`): the same values in
  reference and prediction; ``vessel=1,2,3`` is a region (the union of the values), as in
  nnU-Net's own evaluation.
- an nnU-Net ``dataset.json`` (:func:`labels_from_dataset_json`), read through
  :mod:`nnunet_aux.dataset_format`, the one reading of the dataset contract: its regions and
  the values nnU-Net writes them with (:func:`~nnunet_aux.dataset_format.scored_regions`),
  and its ``scales`` key (:func:`~nnunet_aux.dataset_format.dataset_scales`), e.g.
  ``"scales": {"vessel": {"small": 1, "medium": 2, "large": 3}}``, which names the reference
  values of a region that carry its vessel scales; those regions also get per-scale recall
  and Dice (:func:`nnunet_aux.evaluation.per_scale.scale_metrics`).

With ``--labels``, ``--scales vessel:small=1,medium=2,large=3`` (:func:`parse_scale_arguments`,
:func:`with_scales`) does the same, checked by :func:`~nnunet_aux.dataset_format.check_scales`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..dataset_format import check_dataset_json, check_scales, dataset_scales, load_dataset_json, scored_regions
from ..errors import InputError
from ..validation import check_label_value


@dataclass(frozen=True)
class LabelSpec:
    """One label or region to evaluate.

    Attributes
    ----------
    name : str
        Name used in the JSON and CSV output.
    reference_values : tuple of int
        Values of the reference label map that make up the mask.
    prediction_values : tuple of int
        Values of the predicted label map that make up the mask.
    scales : dict of str to int, optional
        Scale name to reference value, for per-scale metrics of this region.
    """

    name: str
    reference_values: tuple[int, ...]
    prediction_values: tuple[int, ...]
    scales: dict[str, int] | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Values and scales as stored in the evaluation summary."""
        out: dict[str, Any] = {"reference": list(self.reference_values), "prediction": list(self.prediction_values)}
        if self.scales:
            out["scales"] = dict(self.scales)
        return out


def label_specs(labels: Mapping[str, Any], what: str = "labels") -> list[LabelSpec]:
    """Label specs from ``{name: value or values}``, the same values in reference and prediction.

    Parameters
    ----------
    labels : mapping
        Name to a label value or a list of them (a region).
    what : str, optional
        Where they come from, for messages (``"--labels"``).

    Returns
    -------
    labels : list of LabelSpec

    Raises
    ------
    InputError
        A value that is no label value (:func:`~nnunet_aux.validation.check_label_value`), a
        label without values, or no labels at all.

    Examples
    --------
    >>> [(s.name, s.prediction_values) for s in label_specs({"vessel": [1, 2], "tumour": 3})]
    [('vessel', (1, 2)), ('tumour', (3,))]
    """
    specs = []
    for name, value in labels.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise InputError(f"{what}: label {name!r} has no values")
        checked = tuple(check_label_value(v, f"{what}: label {name!r}") for v in values)
        specs.append(LabelSpec(str(name), checked, checked))
    _check_unique_names(specs)
    return specs


def parse_label_arguments(arguments: Sequence[str]) -> list[LabelSpec]:
    """Label specs from command-line words like ``vessel=1`` or ``vessel=1,2,3``.

    Parameters
    ----------
    arguments : sequence of str
        ``name=value`` or ``name=v1,v2,...`` (a region). The values are the same in the
        reference and the prediction.

    Returns
    -------
    labels : list of LabelSpec

    Examples
    --------
    >>> [(s.name, s.reference_values) for s in parse_label_arguments(["vessel=1,2", "tumour=3"])]
    [('vessel', (1, 2)), ('tumour', (3,))]
    """
    labels: dict[str, list[int]] = {}
    for argument in arguments:
        name, sep, value_text = argument.partition("=")
        name = name.strip()
        if not sep or not name or not value_text.strip():
            raise InputError(f"label argument {argument!r} must look like name=1 or name=1,2,3")
        if name in labels:
            raise InputError(f"label names must be unique, repeated: [{name!r}]")
        try:
            labels[name] = [int(v) for v in value_text.split(",")]
        except ValueError:
            raise InputError(f"label argument {argument!r}: values must be integers") from None
    return label_specs(labels, "--labels")


def _check_unique_names(specs: Sequence[LabelSpec]) -> None:
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"label names must be unique, repeated: {duplicates}")
    if not specs:
        raise InputError("no labels to evaluate")


def labels_from_dataset_json(dataset_json: str | os.PathLike | Mapping[str, Any]) -> list[LabelSpec]:
    """Label specs from an nnU-Net dataset.json (path or loaded dict).

    Parameters
    ----------
    dataset_json : path or mapping
        With ``labels`` (``background`` first, as nnU-Net requires), and for region-based
        datasets ``regions_class_order``; optionally the package's ``scales`` key.

    Returns
    -------
    labels : list of LabelSpec
        One per foreground label or region, in the order of ``labels`` (values from
        :func:`~nnunet_aux.dataset_format.scored_regions`); for the multi-class variant also
        its structure, the union of its scale classes, with the scales.

    Examples
    --------
    >>> specs = labels_from_dataset_json({
    ...     "labels": {"background": 0, "vessel": [1, 2, 3], "tumour": 4},
    ...     "regions_class_order": [1, 4],
    ...     "scales": {"vessel": {"small": 1, "medium": 2, "large": 3}}})
    >>> [(s.name, s.reference_values, s.prediction_values) for s in specs]
    [('vessel', (1, 2, 3), (1,)), ('tumour', (4,), (4,))]
    >>> specs[0].scales
    {'small': 1, 'medium': 2, 'large': 3}
    """
    if isinstance(dataset_json, Mapping):
        content, where = check_dataset_json(dataset_json, "dataset.json", required=()), "dataset.json"
    else:
        where = os.fspath(dataset_json)
        content = load_dataset_json(where)  # the package's one check of a dataset.json
    labels = content.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise InputError(f"{where}: no 'labels' mapping")
    if "ignore" in labels:
        raise InputError(f"{where}: an 'ignore' label is not supported by nnunet_aux evaluate")
    scales = dataset_scales(content, where)
    specs = [LabelSpec(name, reference, predicted, scales.get(name))
             for name, (reference, predicted) in scored_regions(content, where).items()]
    _check_unique_names(specs)
    return specs


def with_scales(
    labels: Sequence[LabelSpec], scales: Mapping[str, Mapping[str, int]], where: str = "scales"
) -> list[LabelSpec]:
    """Attach vessel scales to the regions they belong to.

    Parameters
    ----------
    labels : sequence of LabelSpec
    scales : mapping
        Region name to ``{scale name: reference value}``, checked as a dataset.json's
        ``scales`` entry (:func:`~nnunet_aux.dataset_format.check_scales`): the values must be
        reference values of that region, or, for a region that is no label, of the labels
        ``<region>_<scale name>`` (a multi-class prediction; the region is then added as their
        union).
    where : str, optional
        Prefix of error messages.

    Returns
    -------
    labels : list of LabelSpec
        The same labels, with ``scales`` set for the named regions.

    Examples
    --------
    >>> specs = with_scales(parse_label_arguments(["vessel=1,2"]), {"vessel": {"small": 1, "large": 2}})
    >>> specs[0].scales
    {'small': 1, 'large': 2}
    """
    checked = check_scales(scales, {s.name: list(s.reference_values) for s in labels}, where)
    specs = {s.name: s for s in labels}
    for region, region_scales in checked.items():
        spec = specs.get(region)
        if spec is None:  # the multi-class variant's structure: the union of its scale classes
            values = tuple(sorted(region_scales.values()))
            spec = LabelSpec(region, values, values)
        specs[region] = LabelSpec(spec.name, spec.reference_values, spec.prediction_values, region_scales)
    return list(specs.values())


def parse_scale_arguments(arguments: Sequence[str]) -> dict[str, dict[str, int]]:
    """Scales from command-line words like ``vessel:small=1,medium=2,large=3``.

    Parameters
    ----------
    arguments : sequence of str
        ``region:name=value,name=value,...``, one word per region.

    Returns
    -------
    scales : dict
        Region name to ``{scale name: reference value}``, for :func:`with_scales`.

    Examples
    --------
    >>> parse_scale_arguments(["vessel:small=1,large=3"])
    {'vessel': {'small': 1, 'large': 3}}
    """
    scales: dict[str, dict[str, int]] = {}
    for argument in arguments:
        region, sep, rest = argument.partition(":")
        try:
            if not sep or not region.strip():
                raise ValueError
            pairs = [item.split("=") for item in rest.split(",")]
            region_scales = {name.strip(): int(value) for name, value in pairs}
            if not region_scales or any(not name for name in region_scales):
                raise ValueError
        except ValueError:
            raise InputError(
                f"scale argument {argument!r} must look like vessel:small=1,medium=2,large=3"
            ) from None
        scales[region.strip()] = region_scales
    return scales
