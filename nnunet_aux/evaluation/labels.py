"""Which labels or regions to evaluate, and which values they have in reference and prediction.

Two sources:

- ``--labels vessel=1 tumour=2`` (:func:`parse_label_arguments`): the same values in
  reference and prediction; ``vessel=1,2,3`` is a region (the union of the values), as in
  nnU-Net's own evaluation.
- an nnU-Net ``dataset.json`` (:func:`labels_from_dataset_json`). Without regions, each
  foreground label has the same value in reference and prediction. With regions (a label
  whose value is a list of several values) nnU-Net writes region ``i`` (the ``i``-th
  foreground entry of ``labels``) into the prediction as ``regions_class_order[i]``, later
  regions painted over earlier ones. The predicted mask of a region is therefore the set
  of prediction values of all regions contained in it: for
  ``{"vessel": [1, 2, 3], "tumour": 4}`` with ``regions_class_order: [1, 4]`` (this
  package's datasets) the vessel is prediction value 1 and the tumour prediction value 4;
  with ``[1, 2]`` (datasets of nnunet_aux 0.1, which nnU-Net's own evaluation misreads) the
  tumour is read from value 2, so these are still scored right; for BraTS-style nested regions
  (whole tumour ``[1, 2, 3]``, core ``[2, 3]``, enhancing ``[3]``, order ``[1, 2, 3]``)
  the whole tumour is prediction values ``{1, 2, 3}``, as nnU-Net evaluates it.

The package's ``scales`` key of dataset.json, e.g.
``"scales": {"vessel": {"small": 1, "medium": 2, "large": 3}}``, names the reference
values of a region that carry its vessel scales; those regions also get per-scale
recall and Dice (:func:`nnunet_aux.evaluation.per_scale.scale_metrics`). With
``--labels``, ``--scales vessel:small=1,medium=2,large=3`` (:func:`parse_scale_arguments`,
:func:`with_scales`) does the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import InputError


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


def _as_values(name: str, value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"label {name!r} must have non-negative integer values, got {value!r}")
        out.append(int(v))
    if not out:
        raise InputError(f"label {name!r} has no values")
    return tuple(out)


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
    specs = []
    for argument in arguments:
        name, sep, value_text = argument.partition("=")
        name = name.strip()
        if not sep or not name or not value_text.strip():
            raise InputError(f"label argument {argument!r} must look like name=1 or name=1,2,3")
        try:
            values = tuple(int(v) for v in value_text.split(","))
        except ValueError:
            raise InputError(f"label argument {argument!r}: values must be integers") from None
        specs.append(LabelSpec(name, _as_values(name, list(values)), _as_values(name, list(values))))
    _check_unique_names(specs)
    return specs


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
        One per foreground label or region, in the order of ``labels``.

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
    from ..dataset_format import check_dataset_json, load_dataset_json

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

    foreground = []
    for name, value in labels.items():
        values = _as_values(name, value)
        if set(values) == {0}:
            continue  # background, as nnU-Net skips it
        foreground.append((str(name), values))
    has_regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())

    if has_regions:
        order = content.get("regions_class_order")
        if not isinstance(order, (list, tuple)) or len(order) != len(foreground):
            raise InputError(
                f"{where}: region-based labels need 'regions_class_order' with one entry per "
                f"foreground region ({len(foreground)}), got {order!r}"
            )
        order = [_as_values("regions_class_order", v)[0] for v in order]
        specs = []
        for name, values in foreground:
            # Regions painted later overwrite earlier ones; a region's predicted mask is the
            # union of the values of all regions contained in it.
            predicted = tuple(
                sorted({order[j] for j, (_, other) in enumerate(foreground) if set(other) <= set(values)})
            )
            specs.append(LabelSpec(name, values, predicted))
    else:
        specs = [LabelSpec(name, values, values) for name, values in foreground]

    specs = with_scales(specs, content.get("scales") or {}, where=where)
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
        Region name to ``{scale name: reference value}``; the values must be reference
        values of that region.
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
    if not isinstance(scales, Mapping):
        raise InputError(f"{where}: 'scales' must map a region name to {{scale name: label value}}")
    by_name = {s.name: s for s in labels}
    for region, region_scales in scales.items():
        if region not in by_name:
            raise InputError(f"{where}: 'scales' names {region!r}, which is not a foreground label")
        if not isinstance(region_scales, Mapping) or not region_scales:
            raise InputError(f"{where}: scales of {region!r} must be a non-empty mapping, got {region_scales!r}")
        scale_values = {str(k): _as_values(f"scale {k}", v)[0] for k, v in region_scales.items()}
        outside = sorted(set(scale_values.values()) - set(by_name[region].reference_values))
        if outside:
            raise InputError(f"{where}: scale values {outside} are not values of region {region!r}")
        spec = by_name[region]
        by_name[region] = LabelSpec(spec.name, spec.reference_values, spec.prediction_values, scale_values)
    return [by_name[s.name] for s in labels]


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
