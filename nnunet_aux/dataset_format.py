"""The data contract of a scale-decomposed dataset in nnU-Net raw format.

One label map per case. Voxels of the decomposed structure (the vessel tree) carry their
scale, ``1`` (smallest) ... ``S`` (largest); the other structures of the source dataset
follow as ``S + 1, S + 2, ...`` in their original order; an ``ignore`` label stays last.
``dataset.json`` uses nnU-Net's region-based labels so that the main task is the whole
tree, and records the scales under the extra key ``"scales"``::

    {"channel_names": {"0": "CT"},
     "labels": {"background": 0, "vessel": [1, 2, 3], "tumour": 4},
     "regions_class_order": [1, 4],
     "scales": {"vessel": {"small": 1, "medium": 2, "large": 3}},
     "numTraining": 20, "file_ending": ".nii.gz"}

nnU-Net ignores the ``"scales"`` key; stock ``nnUNetTrainer`` trains the binary vessel
task (plus the other structures) on it. ``regions_class_order`` gives the value each
region is written with in predictions. It is a value *inside* that region (its smallest,
see :func:`written_values`): vessel 1, tumour 4 above. nnU-Net's own evaluation
(``fold_X/validation/summary.json``, ``nnUNetv2_evaluate_folder``,
``nnUNetv2_find_best_configuration``, ensembling) reads a predicted region as the voxels
whose value lies in the region, so only then does it score predictions right.

Datasets written by nnunet_aux 0.1 wrote the source dataset's values (vessel 1, tumour 2):
nnU-Net then reads the tumour as a vessel scale. :func:`check_regions_class_order` finds
them and names the fix, ``nnunet_aux upgrade -d ID`` (:func:`upgrade_dataset_json`), which
rewrites dataset.json in place. Predictions go back to the source dataset's values with
``nnunet_aux map-labels`` (:mod:`nnunet_aux.conversion.map_labels`).

The multi-class variant (:func:`multiclass_dataset_json`) uses the very same label files
with one class per scale and no regions.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import InputError
from .validation import check_label_value, check_n_scales

#: Key of ``dataset.json`` that names the scale labels of the decomposed structure.
SCALES_KEY = "scales"

#: Name of the JSON report written beside ``dataset.json`` by every conversion.
REPORT_FILENAME = "scale_decomposition_report.json"


def scale_names(n_scales: int) -> tuple[str, ...]:
    """Names of the scales, smallest first.

    ``S = 2``: small, large; ``S = 3``: small, medium, large (the paper's setting);
    ``S > 3``: small, medium1, ..., medium{S-2}, large.

    Parameters
    ----------
    n_scales : int
        Number of scales, at least 2.

    Returns
    -------
    names : tuple of str
        ``n_scales`` names.

    Examples
    --------
    >>> scale_names(3)
    ('small', 'medium', 'large')
    >>> scale_names(4)
    ('small', 'medium1', 'medium2', 'large')
    """
    n_scales = check_n_scales(n_scales)
    if n_scales == 2:
        return ("small", "large")
    if n_scales == 3:
        return ("small", "medium", "large")
    return ("small", *(f"medium{i}" for i in range(1, n_scales - 1)), "large")


@dataclass(frozen=True)
class ScaleSpec:
    """What a dataset.json says about the scales of its decomposed structure.

    Attributes
    ----------
    structure : str
        Name of the decomposed structure, e.g. ``"vessel"``.
    scale_labels : tuple of int
        Label values of the scales, smallest scale first.
    scale_names : tuple of str
        Names of the scales, same order.
    regions : dict of str to tuple of int
        The main task: each non-background, non-ignore entry of ``labels`` in file order,
        as a tuple of label values (the structure's region holds all scale labels). In
        the multi-class variant each class is its own one-value region.
    regions_class_order : tuple of int or None
        Values that predictions use for each region; ``None`` for the multi-class variant.
    ignore_label : int or None
        nnU-Net's ignore label, if any.
    multiclass : bool
        True for the multi-class variant (one class per scale, no regions).
    """

    structure: str
    scale_labels: tuple[int, ...]
    scale_names: tuple[str, ...]
    regions: dict[str, tuple[int, ...]]
    regions_class_order: tuple[int, ...] | None
    ignore_label: int | None
    multiclass: bool = False

    @property
    def n_scales(self) -> int:
        """Number of scales ``S``."""
        return len(self.scale_labels)

    @property
    def structure_region(self) -> tuple[int, ...]:
        """Label values of the whole structure (all its scales)."""
        return tuple(self.scale_labels)


def _label_values(value: Any, name: str, source: str) -> tuple[int, ...]:
    """The value(s) of one entry of ``labels``, each checked by :func:`~nnunet_aux.validation.check_label_value`."""
    values = value if isinstance(value, (list, tuple)) else (value,)
    if not values:
        raise InputError(f"{source}: label {name!r} has no value")
    return tuple(check_label_value(v, f"{source}: label {name!r}" + (f" (in {list(values)})" if len(values) > 1
                                                                       else "")) for v in values)


def check_dataset_json(content: Any, source: str = "dataset.json", *,
                       required: Sequence[str] = ("labels",)) -> dict:
    """Check what a dataset.json says before anything uses it: the one validator of the package.

    Every command that reads an nnU-Net dataset.json (conversions, ``map-labels``,
    ``upgrade``, ``evaluate``, the scale trainers through :func:`read_scale_spec`) checks it
    here, so a malformed entry gets the same one-line message whichever door it comes in by.

    Parameters
    ----------
    content : any
        The loaded JSON.
    source : str, optional
        The file, for messages.
    required : sequence of str, optional
        Keys that must be present.

    Returns
    -------
    dataset_json : dict
        ``content`` itself.

    Raises
    ------
    InputError
        Naming the file and the field: not a JSON object; ``labels`` not an object, a label
        value that is not an integer from 0 to :data:`~nnunet_aux.validation.MAX_LABEL_VALUE`
        (negative values would wrap in a lookup table, ``1.7`` would be read as 1), two
        labels with one value; ``numTraining`` not a non-negative integer; ``file_ending``
        not a string starting with a dot; ``channel_names`` not a non-empty object;
        ``regions_class_order`` not a list of label values.

    Examples
    --------
    >>> check_dataset_json({"labels": {"background": 0, "vessel": 1}, "numTraining": "six"})
    Traceback (most recent call last):
    ...
    nnunet_aux.errors.InputError: dataset.json: numTraining must be a non-negative integer (the number of training cases), got 'six'
    """  # noqa: E501 (the doctest shows the message as it comes)
    if not isinstance(content, Mapping):
        raise InputError(f"{source}: expected a JSON object (an nnU-Net dataset.json with 'labels', "
                         f"'channel_names', ...), got a JSON {_json_kind(content)}")
    for key in required:
        if key not in content:
            raise InputError(f"{source} has no {key!r} entry")
    if "labels" in content:
        labels = content["labels"]
        if not isinstance(labels, Mapping) or not labels:
            raise InputError(f"{source}: 'labels' must be an object of label names and values, e.g. "
                             f"{{\"background\": 0, \"vessel\": 1}}, got {labels!r}")
        owners: dict[int, str] = {}
        for name, value in labels.items():
            values = _label_values(value, name, source)
            if isinstance(value, (list, tuple)):
                continue  # regions share values by design
            if values[0] in owners:
                raise InputError(f"{source}: labels {owners[values[0]]!r} and {name!r} share the value {values[0]}")
            owners[values[0]] = name
    if "numTraining" in content:
        n = content["numTraining"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InputError(f"{source}: numTraining must be a non-negative integer (the number of training "
                             f"cases), got {n!r}")
    if "file_ending" in content:
        ending = content["file_ending"]
        if not isinstance(ending, str) or not ending.startswith(".") or len(ending) < 2 or "/" in ending:
            raise InputError(f"{source}: file_ending must be a file ending starting with a dot, e.g. \".nii.gz\", "
                             f"got {ending!r}")
    for key in ("channel_names", "modality"):
        if key in content and (not isinstance(content[key], Mapping) or not content[key]):
            raise InputError(f"{source}: {key} must be an object of channel numbers and names, e.g. "
                             f"{{\"0\": \"CT\"}}, got {content[key]!r}")
    order = content.get("regions_class_order")
    if order is not None:
        if not isinstance(order, (list, tuple)):
            raise InputError(f"{source}: regions_class_order must be a list of label values, got {order!r}")
        for v in order:
            check_label_value(v, f"{source}: regions_class_order {list(order)}: entry")
    return content  # type: ignore[return-value]


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def foreground_regions(labels: Mapping[str, Any], source: str = "dataset.json") -> dict[str, tuple[int, ...]]:
    """The regions nnU-Net predicts: every entry of ``labels`` but background and ignore, in order.

    Examples
    --------
    >>> foreground_regions({"background": 0, "vessel": [1, 2, 3], "tumour": 4, "ignore": 5})
    {'vessel': (1, 2, 3), 'tumour': (4,)}
    """
    regions = {}
    for name, value in labels.items():
        values = _label_values(value, name, source)
        if name in ("background", "ignore") or values == (0,):
            continue
        regions[str(name)] = values
    return regions


def written_values(labels: Mapping[str, Any], source: str = "dataset.json") -> list[int]:
    """``regions_class_order`` that writes each region with a value inside it: its smallest value.

    nnU-Net's predictor paints region ``i`` with ``regions_class_order[i]`` (later regions
    over earlier ones); its evaluation reads a region back as the voxels whose value lies
    in the region. Only a value inside the region makes the two agree.

    Parameters
    ----------
    labels : mapping
        The ``labels`` entry of a dataset.json.
    source : str, optional
        For error messages.

    Returns
    -------
    order : list of int
        One value per foreground region, in the order of ``labels``.

    Examples
    --------
    >>> written_values({"background": 0, "vessel": [1, 2, 3], "tumour": 4})
    [1, 4]
    """
    return [min(values) for values in foreground_regions(labels, source).values()]


def _upgrade_hint(source: str) -> str:
    found = re.search(r"Dataset(\d{3})_", source)
    return f"nnunet_aux upgrade -d {int(found.group(1)) if found else 'ID'}"


def is_region_based(labels: Mapping[str, Any]) -> bool:
    """Whether ``labels`` declares regions (an entry of several values), as nnU-Net's ``LabelManager`` decides.

    Examples
    --------
    >>> is_region_based({"background": 0, "vessel": [1, 2, 3], "tumour": 4}), is_region_based({"vessel": 1})
    (True, False)
    """
    return any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())


def _regions_class_order(dataset_json: Mapping[str, Any], regions: Mapping[str, tuple[int, ...]], source: str,
                         required: bool) -> list[int] | None:
    """``regions_class_order`` as label values, one per region; None where absent and not ``required``."""
    order = dataset_json.get("regions_class_order")
    if order is None:
        if required:
            raise InputError(f"{source}: region-based labels need 'regions_class_order' with one value per "
                             f"foreground region ({', '.join(regions)})")
        return None
    if not isinstance(order, (list, tuple)):
        raise InputError(f"{source}: regions_class_order must be a list of label values, got {order!r}")
    order = [check_label_value(v, f"{source}: regions_class_order {list(order)}: entry") for v in order]
    if len(order) != len(regions):
        raise InputError(f"{source}: regions_class_order {order} needs one value per foreground region "
                         f"({', '.join(regions)})")
    return order


def check_regions_class_order(dataset_json: Mapping[str, Any], source: str = "dataset.json") -> None:
    """Stop when a region-based dataset.json writes a region with a value outside it.

    Such predictions are misread by nnU-Net's own evaluation (a tumour written as 2 is read
    as a vessel scale); datasets written by nnunet_aux 0.1 are like that.

    Raises
    ------
    InputError
        Naming the region, the value and the command that fixes the dataset.

    Examples
    --------
    >>> check_regions_class_order({"labels": {"background": 0, "vessel": [1, 2], "tumour": 3},
    ...                            "regions_class_order": [1, 3]})
    """
    regions = foreground_regions(dataset_json["labels"], source)
    order = _regions_class_order(dataset_json, regions, source, required=False)
    if order is None:
        return
    for (name, values), value in zip(regions.items(), order):
        if value not in values:
            readers = [n for n, v in regions.items() if value in v]
            read_as = f"reads as {readers[0]!r}" if readers else "finds in no region"
            raise InputError(
                f"{source}: regions_class_order {order} writes {name!r} {list(values)} as {value}, which "
                f"nnU-Net's evaluation {read_as} (a dataset written by nnunet_aux 0.1); run "
                f"`{_upgrade_hint(source)}` to rewrite its dataset.json with {written_values(dataset_json['labels'])}"
            )


def scored_regions(dataset_json: Mapping[str, Any],
                   source: str = "dataset.json") -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """What a prediction is scored on: region name -> (reference values, prediction values).

    The foreground regions of ``labels`` in order (each label, without regions), and for the
    multi-class variant also its structure, the union of its scale classes (which is what
    :func:`multiclass_dataset_json` keeps the ``scales`` key for). nnU-Net writes region
    ``i`` into a prediction as ``regions_class_order[i]``, later regions painted over earlier
    ones, and reads a region back as the voxels whose value lies in it; the predicted mask of
    a region is therefore the set of values written for all regions contained in it. For
    ``{"vessel": [1, 2, 3], "tumour": 4}`` with ``[1, 4]`` (this package's datasets) that is
    vessel 1 and tumour 4; with ``[1, 2]`` (nnunet_aux 0.1) the tumour is read from 2, so such
    predictions are still scored right; for BraTS-style nested regions (whole tumour
    ``[1, 2, 3]``, core ``[2, 3]``, enhancing ``[3]``, order ``[1, 2, 3]``) the whole tumour
    is ``{1, 2, 3}``, as nnU-Net evaluates it.

    Parameters
    ----------
    dataset_json : mapping
        A dataset.json checked by :func:`check_dataset_json`, with ``labels``.
    source : str, optional
        For error messages.

    Returns
    -------
    regions : dict of str to (tuple of int, tuple of int)

    Raises
    ------
    InputError
        A region-based dataset.json without ``regions_class_order`` (one value per region),
        or a malformed ``scales`` entry (see :func:`check_scales`).

    Examples
    --------
    >>> scored_regions({"labels": {"background": 0, "vessel": [1, 2, 3], "tumour": 4},
    ...                 "regions_class_order": [1, 2]})
    {'vessel': ((1, 2, 3), (1,)), 'tumour': ((4,), (2,))}
    """
    labels = dataset_json["labels"]
    regions = foreground_regions(labels, source)
    order = _regions_class_order(dataset_json, regions, source, required=True) if is_region_based(labels) else None
    written = dict(zip(regions, ((v,) for v in order))) if order is not None else regions
    scored = dict(regions)
    for structure, by_name in dataset_scales(dataset_json, source).items():
        scored.setdefault(structure, tuple(sorted(by_name.values())))
    return {name: (values, tuple(sorted({v for other, region in regions.items() if set(region) <= set(values)
                                         for v in written[other]})))
            for name, values in scored.items()}


def upgrade_dataset_json(dataset_json: Mapping[str, Any], source: str = "dataset.json") -> tuple[dict, bool]:
    """dataset.json with a ``regions_class_order`` that writes every region inside itself.

    Parameters
    ----------
    dataset_json : mapping
        A region-based dataset.json (scale-decomposed or not); other datasets come back
        unchanged.
    source : str, optional
        For error messages.

    Returns
    -------
    dataset_json : dict
        A copy; ``regions_class_order`` from :func:`written_values` where it was wrong.
    changed : bool

    Examples
    --------
    >>> old = {"labels": {"background": 0, "vessel": [1, 2, 3], "tumour": 4}, "regions_class_order": [1, 2]}
    >>> new, changed = upgrade_dataset_json(old)
    >>> new["regions_class_order"], changed
    ([1, 4], True)
    """
    if isinstance(dataset_json, Mapping) and not isinstance(dataset_json.get("labels", {}), Mapping):
        raise InputError(f"{source} has no 'labels' object; it is not an nnU-Net dataset.json")
    out = dict(check_dataset_json(dataset_json, source))
    if out.get("regions_class_order") is None:
        return out, False
    try:
        check_regions_class_order(out, source)
        return out, False
    except InputError:
        out["regions_class_order"] = written_values(out["labels"], source)
        return out, True


def make_scale_dataset_json(
    num_training: int,
    n_scales: int = 3,
    *,
    structure: str = "vessel",
    other_labels: Sequence[str] = (),
    ignore: bool = False,
    regions_class_order: Sequence[int] | None = None,
    channel_names: Mapping[str, str] | None = None,
    file_ending: str = ".nii.gz",
    name: str | None = None,
    description: str | None = None,
    **extra: Any,
) -> dict:
    """dataset.json of a scale-decomposed dataset.

    Parameters
    ----------
    num_training : int
        Number of training cases.
    n_scales : int, optional
        Number of scales ``S``; labels ``1..S`` are the scales, smallest first.
    structure : str, optional
        Name of the decomposed structure.
    other_labels : sequence of str, optional
        Other structures, labelled ``S + 1, S + 2, ...`` in this order.
    ignore : bool, optional
        Add nnU-Net's ``ignore`` label after all others.
    regions_class_order : sequence of int, optional
        Value of each region (structure first, then ``other_labels``) in predictions; each
        must lie inside its region. Defaults to :func:`written_values`: the structure is
        written as 1, the other labels as their own values.
    channel_names : mapping, optional
        nnU-Net channel names; defaults to ``{"0": "CT"}``.
    file_ending : str, optional
        File ending of images and labels.
    name, description : str, optional
        Stored as ``name`` and ``description``.
    **extra
        Any further keys to store.

    Returns
    -------
    dataset_json : dict
        Ready for :func:`write_dataset_json`.

    Examples
    --------
    >>> dj = make_scale_dataset_json(20, 3, other_labels=["tumour"])
    >>> dj["labels"]
    {'background': 0, 'vessel': [1, 2, 3], 'tumour': 4}
    >>> dj["regions_class_order"], dj["scales"]
    ([1, 4], {'vessel': {'small': 1, 'medium': 2, 'large': 3}})
    """
    names = scale_names(n_scales)
    other_labels = list(other_labels)
    taken = {"background", "ignore", structure}
    for label in other_labels:
        if label in taken:
            raise ValueError(f"label name {label!r} is used twice or reserved")
        taken.add(label)
    if int(num_training) < 0:
        raise ValueError(f"num_training must be non-negative, got {num_training}")
    labels: dict[str, Any] = {"background": 0, structure: list(range(1, n_scales + 1))}
    for i, label in enumerate(other_labels):
        labels[label] = n_scales + 1 + i
    if ignore:
        labels["ignore"] = n_scales + 1 + len(other_labels)
    n_regions = 1 + len(other_labels)
    if regions_class_order is None:
        regions_class_order = written_values(labels)
    regions_class_order = [int(v) for v in regions_class_order]
    if len(regions_class_order) != n_regions:
        raise ValueError(
            f"regions_class_order needs {n_regions} values (the structure and {len(other_labels)} "
            f"other labels), got {regions_class_order}"
        )
    for (region, values), value in zip(foreground_regions(labels).items(), regions_class_order):
        if value not in values:
            raise ValueError(f"regions_class_order writes {region!r} {list(values)} as {value}, a value outside "
                             f"it; nnU-Net's evaluation would misread it")
    dataset_json: dict[str, Any] = {
        "channel_names": dict(channel_names) if channel_names is not None else {"0": "CT"},
        "labels": labels,
        "regions_class_order": regions_class_order,
        "numTraining": int(num_training),
        "file_ending": file_ending,
        SCALES_KEY: {structure: {n: i + 1 for i, n in enumerate(names)}},
    }
    if name is not None:
        dataset_json["name"] = name
    if description is not None:
        dataset_json["description"] = description
    dataset_json.update(extra)
    return dataset_json


def read_scale_spec(dataset_json: Mapping[str, Any], source: str = "dataset.json") -> ScaleSpec:
    """Read and check the scale information of a dataset.json.

    Parameters
    ----------
    dataset_json : mapping
        The loaded dataset.json.
    source : str, optional
        Where it came from, used in error messages (e.g. the file's path).

    Returns
    -------
    spec : ScaleSpec

    Raises
    ------
    InputError
        (a ``ValueError``) when the ``"scales"`` key is missing or malformed (see
        :func:`check_scales`), names other than one structure or fewer than two scales, or
        the structure's region is not exactly its scale labels.

    Examples
    --------
    >>> spec = read_scale_spec(make_scale_dataset_json(4, 3, other_labels=["tumour"]))
    >>> spec.structure, spec.scale_labels, spec.scale_names
    ('vessel', (1, 2, 3), ('small', 'medium', 'large'))
    >>> spec.regions
    {'vessel': (1, 2, 3), 'tumour': (4,)}
    """
    if isinstance(dataset_json, Mapping) and not isinstance(dataset_json.get("labels", {}), Mapping):
        raise InputError(f"{source} has no 'labels' object; it is not an nnU-Net dataset.json")
    check_dataset_json(dataset_json, source)
    if SCALES_KEY not in dataset_json:
        raise InputError(
            f"{source} has no {SCALES_KEY!r} entry, so it is not a scale-decomposed dataset "
            f"(run `nnunet_aux decompose` to make one)"
        )
    scales = dataset_scales(dataset_json, source)
    if len(scales) != 1:
        raise InputError(_scales_shape_message(source, dataset_json[SCALES_KEY]))
    (structure, by_name), = scales.items()
    if len(by_name) < 2:
        raise InputError(f"{source}: {SCALES_KEY}[{structure!r}] must map at least two scale names to labels")
    labels = dataset_json["labels"]
    regions = foreground_regions(labels, source)
    scale_labels = tuple(by_name.values())
    multiclass = structure not in regions
    if not multiclass:
        if tuple(sorted(regions[structure])) != scale_labels:
            raise InputError(
                f"{source}: label {structure!r} is {list(regions[structure])} but its scales are "
                f"{list(scale_labels)}; the structure's region must hold exactly its scale labels"
            )
        _regions_class_order(dataset_json, regions, source, required=True)
        check_regions_class_order(dataset_json, source)
    order = dataset_json.get("regions_class_order")
    return ScaleSpec(
        structure=str(structure),
        scale_labels=scale_labels,
        scale_names=tuple(by_name),
        regions=regions,
        regions_class_order=None if order is None else tuple(int(v) for v in order),
        ignore_label=_label_values(labels["ignore"], "ignore", source)[0] if "ignore" in labels else None,
        multiclass=multiclass,
    )


def _scales_shape_message(source: str, scales: Any) -> str:
    return (f"{source}: {SCALES_KEY!r} must map exactly one structure to its scales, "
            f"e.g. {{'vessel': {{'small': 1, 'medium': 2, 'large': 3}}}}; got {scales!r}")


def dataset_scales(dataset_json: Mapping[str, Any], source: str = "dataset.json") -> dict[str, dict[str, int]]:
    """The scale labels of a dataset.json: structure -> {scale name: label value}, smallest first.

    ``{}`` for a dataset.json without a ``scales`` entry; otherwise checked by :func:`check_scales`.

    Examples
    --------
    >>> dataset_scales(make_scale_dataset_json(4, 2))
    {'vessel': {'small': 1, 'large': 2}}
    """
    if SCALES_KEY not in dataset_json:
        return {}
    return check_scales(dataset_json[SCALES_KEY], dataset_json["labels"], source)


def check_scales(scales: Any, labels: Mapping[str, Any], source: str = "dataset.json") -> dict[str, dict[str, int]]:
    """Check a ``scales`` entry against ``labels``; the one reading of it (dataset.json or ``--scales``).

    Each structure maps scale names to single label values of ``labels``. For a
    region-based (or plain) dataset the values must lie in the structure's region; in the
    multi-class variant, where the structure is no label, they must be the values of its
    classes ``<structure>_<scale name>``.

    Parameters
    ----------
    scales : any
        The ``scales`` entry.
    labels : mapping
        The ``labels`` entry of the same dataset.json.
    source : str, optional
        For error messages.

    Returns
    -------
    scales : dict of str to dict of str to int
        Per structure its scales sorted by value (the file lists them smallest first; sorting
        makes a reordered file read the same).

    Raises
    ------
    InputError
        Naming the file, the structure and the values that do not fit.
    """
    if not isinstance(scales, Mapping):
        raise InputError(_scales_shape_message(source, scales))
    regions = foreground_regions(labels, source)
    declared = sorted({v for name, value in labels.items() if name != "ignore"
                       for v in _label_values(value, name, source)})
    out: dict[str, dict[str, int]] = {}
    for structure, by_name in scales.items():
        if not isinstance(by_name, Mapping) or not by_name:
            raise InputError(f"{source}: {SCALES_KEY}[{structure!r}] must map scale names to label values, "
                             f"got {by_name!r}")
        pairs = sorted(((_label_values(v, n, source), str(n)) for n, v in by_name.items()), key=lambda p: p[0])
        if any(len(v) != 1 for v, _ in pairs):
            raise InputError(f"{source}: each scale of {structure!r} must be a single label value")
        values, names = tuple(v[0] for v, _ in pairs), tuple(n for _, n in pairs)
        missing = [v for v in values if v not in declared or v == 0]
        if missing:
            raise InputError(f"{source}: scale label(s) {missing} of {structure!r} are not among the labels {declared}")
        if structure in regions:
            outside = sorted(set(values) - set(regions[structure]))
            if outside:
                raise InputError(f"{source}: scale values {outside} are not values of region {structure!r} "
                                 f"{list(regions[structure])}")
        else:
            _check_multiclass_scale_classes(labels, structure, values, names, source)
        out[str(structure)] = dict(zip(names, values))
    return out


def _check_multiclass_scale_classes(labels: Mapping[str, Any], structure: str, scale_labels: tuple[int, ...],
                                    names: tuple[str, ...], source: str) -> None:
    """The multi-class variant names its scale classes ``<structure>_<scale name>``; a ``"scales"``
    entry pointing at other classes (e.g. vessel and tumour) is a mistake."""
    wrong = [f"{n}={v}" for v, n in zip(scale_labels, names)
             if labels.get(f"{structure}_{n}") != v and labels.get(f"{structure}_{n}") != [v]]
    if wrong:
        raise InputError(
            f"{source}: {SCALES_KEY}[{structure!r}] names {', '.join(wrong)}, but {structure!r} is not a "
            f"foreground label and the labels {', '.join(f'{structure}_{n}' for n in names)} do not hold these "
            f"values; the scales must be the values of the {structure!r} region"
        )


def multiclass_dataset_json(scale_dataset_json: Mapping[str, Any], source: str = "dataset.json") -> dict:
    """The multi-class baseline variant of a scale-decomposed dataset.json.

    Each scale becomes its own class (``"vessel_small": 1, ...``), the other labels keep
    their values, and there are no regions, so nnU-Net trains a softmax over all classes
    on the very same label files. The ``"scales"`` key is kept (now pointing at classes)
    so that evaluation can merge the scale classes back into the whole structure.

    Parameters
    ----------
    scale_dataset_json : mapping
        dataset.json of a scale-decomposed dataset.
    source : str, optional
        Where it came from, for error messages.

    Returns
    -------
    dataset_json : dict

    References
    ----------
    .. [1] Sadikine et al., "Scale-specific auxiliary multi-task contrastive learning for
           deep liver vessel segmentation", ISBI 2023, Table 1 ("multi-class" setting).

    Examples
    --------
    >>> mc = multiclass_dataset_json(make_scale_dataset_json(4, 2, other_labels=["tumour"]))
    >>> mc["labels"]
    {'background': 0, 'vessel_small': 1, 'vessel_large': 2, 'tumour': 3}
    >>> "regions_class_order" in mc
    False
    """
    spec = read_scale_spec(scale_dataset_json, source)
    if spec.multiclass:
        raise InputError(f"{source} is already a multi-class variant")
    labels: dict[str, Any] = {}
    for label_name, value in scale_dataset_json["labels"].items():
        if label_name == spec.structure:
            for scale_name, scale_label in zip(spec.scale_names, spec.scale_labels):
                labels[f"{spec.structure}_{scale_name}"] = scale_label
        elif isinstance(value, (list, tuple)):
            raise InputError(
                f"{source}: label {label_name!r} is a region {value}; only the decomposed structure "
                f"may be a region for the multi-class variant"
            )
        else:
            labels[label_name] = value
    # nnU-Net wants labels in increasing order of value, ignore last.
    labels = dict(sorted(labels.items(), key=lambda kv: (kv[0] == "ignore", kv[1])))
    out = {k: (labels if k == "labels" else v) for k, v in scale_dataset_json.items()
           if k != "regions_class_order"}
    out[SCALES_KEY] = {spec.structure: dict(zip(spec.scale_names, spec.scale_labels))}
    out["description"] = (
        f"multi-class variant (one class per {spec.structure} scale) of "
        f"{scale_dataset_json.get('name', source)}"
    )
    return out


def load_dataset_json(path: str | os.PathLike, check: bool = True) -> dict:
    """Load a dataset.json (or the one inside a dataset folder) with a clear error.

    Parameters
    ----------
    path : path-like
        The file, or a folder holding ``dataset.json``.
    check : bool, optional
        Check it with :func:`check_dataset_json` (labels, numTraining, file_ending, ...).
        Without, only that it is a JSON object (a report, MSD's own dataset.json).

    Returns
    -------
    dataset_json : dict
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    if not path.is_file():
        raise InputError(f"missing file {path}" if not path.exists() else f"{path} is not a file")
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if check:
        return check_dataset_json(content, str(path), required=())
    if not isinstance(content, Mapping):
        raise InputError(f"{path}: expected a JSON object, got a JSON {_json_kind(content)}")
    return content


def write_dataset_json(dataset_json: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a dataset.json atomically (temporary file, then rename).

    Parameters
    ----------
    dataset_json : mapping
        Content; tuples become lists.
    path : path-like
        The file, or a folder to write ``dataset.json`` into.

    Returns
    -------
    path : Path
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = write_dataset_json(make_scale_dataset_json(1, 2), d)
    ...     read_scale_spec(load_dataset_json(p)).scale_names
    ('small', 'large')
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dataset.json"
    return write_json_atomic(dataset_json, path)


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays, Paths and tuples-in-sets show up in reports.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (os.PathLike, set, frozenset)):
        return str(obj) if isinstance(obj, os.PathLike) else sorted(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json_atomic(content: Any, path: str | os.PathLike, *, allow_nan: bool = True) -> Path:
    """Write JSON to ``path`` through a temporary file in the same folder and a rename.

    A kill or a failed write (full disk, file-size limit) leaves the old file or none,
    never a half-written one. A new file gets the mode the umask gives (0644 under umask
    022), a replaced one keeps its mode. ``allow_nan=False`` refuses NaN and infinity
    (standard JSON) instead of writing them. A file that cannot be written raises
    :class:`~nnunet_aux.errors.InputError` naming it.
    """
    from .io.files import write_text_atomic

    text = json.dumps(content, indent=4, sort_keys=False, default=_json_default, allow_nan=allow_nan) + "\n"
    return write_text_atomic(path, text)
