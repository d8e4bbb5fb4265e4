"""Evaluate a folder of predictions against a folder of references (``nnunet_aux evaluate``)."""

from __future__ import annotations

import csv as csv_format  # the name csv is evaluate_folders' flag
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError, warn
from ..io.files import atomic_write, check_outputs_apart, check_writable_folder, make_folder, write_text_atomic
from ..io.segmentations import read_segmentation
from ..parallel import run_parallel
from ..validation import check_positive_int
from .aggregate import summarize
from .io import check_same_geometry, find_cases, match_cases
from .labels import LabelSpec, label_specs, labels_from_dataset_json
from .metrics import VESSEL_METRIC_KEYS, vessel_metrics
from .per_scale import scale_metrics

#: Per-scale quantities reported in the summary and the CSV.
SCALE_METRIC_KEYS = ("recall", "dice")

#: How empty masks and percentiles are handled, copied into every summary.
CONVENTIONS = {
    "distances": "mm, voxel-centre Euclidean distances between surface voxels (face-connected border)",
    "hd95": "max of the two directed 95th percentiles (numpy linear interpolation, MONAI convention)",
    "assd": "mean over the union of both directed surface distance sets",
    "both_empty": "dice = jaccard = cldice = 1, hd = hd95 = assd = 0",
    "one_empty": "dice = jaccard = cldice = 0, hd = hd95 = assd = diagonal of the image in mm",
    "scales": "recall/dice of a scale absent from the reference are null and skipped in aggregates (n_skipped)",
    "std": "population standard deviation (ddof=0)",
}


def default_num_processes() -> int:
    """Worker processes: ``$nnUNet_def_n_proc`` (nnU-Net's variable) or 8, at most the CPUs."""
    requested = int(os.environ.get("nnUNet_def_n_proc", 8))
    return max(1, min(requested, os.cpu_count() or 1))


def _label_specs(
    labels: Mapping[str, int | Sequence[int]] | Sequence[LabelSpec] | None,
    dataset_json: str | os.PathLike | Mapping[str, Any] | None,
    ref_dir: str,
    pred_dir: str,
) -> tuple[list[LabelSpec], str]:
    if labels is not None:
        if isinstance(labels, Mapping):
            specs = label_specs(labels)
        else:
            specs = list(labels)
            if not all(isinstance(s, LabelSpec) for s in specs):
                raise InputError("labels must be a mapping name -> value(s) or a sequence of LabelSpec")
        if not specs:
            raise InputError("labels is empty")
        return specs, "labels argument"
    if dataset_json is not None:
        where = "dataset_json argument" if isinstance(dataset_json, Mapping) else os.fspath(dataset_json)
        return labels_from_dataset_json(dataset_json), where
    # nnUNetv2_predict copies dataset.json into its output folder; nnU-Net raw datasets
    # keep it beside labelsTr / labelsTs.
    for candidate in (os.path.join(pred_dir, "dataset.json"), os.path.join(os.path.dirname(ref_dir), "dataset.json")):
        if os.path.isfile(candidate):
            return labels_from_dataset_json(candidate), candidate
    raise InputError(
        "no labels given: pass labels (--labels vessel=1 ...) or a dataset.json; none was found in "
        f"{pred_dir} or beside {ref_dir}"
    )


def evaluate_case(ref_file: str, pred_file: str, labels: Sequence[LabelSpec]) -> dict[str, Any]:
    """Metrics of one case for every label or region.

    Parameters
    ----------
    ref_file, pred_file : str
        Reference and predicted label maps on the same grid.
    labels : sequence of LabelSpec

    Returns
    -------
    result : dict
        ``case`` files, ``spacing`` (array order) and ``metrics``: per label name the
        :func:`~nnunet_aux.evaluation.metrics.vessel_metrics` dict, plus ``scales`` (from
        :func:`~nnunet_aux.evaluation.per_scale.scale_metrics`) for labels with scales;
        ``undeclared_reference_values`` when the reference holds values no label has
        (they count as background).
    """
    ref, spacing = read_segmentation(ref_file)
    pred, _ = read_segmentation(pred_file)
    if ref.shape != pred.shape:
        raise InputError(f"{ref_file} and {pred_file}: shape {ref.shape} vs {pred.shape}")
    metrics = {}
    declared = {0}.union(*(spec.reference_values for spec in labels))
    undeclared = sorted(set(np.unique(ref).tolist()) - declared)
    for spec in labels:
        ref_mask = np.isin(ref, spec.reference_values)
        pred_mask = np.isin(pred, spec.prediction_values)
        label_metrics: dict[str, Any] = vessel_metrics(pred_mask, ref_mask, spacing=spacing)
        if spec.scales:
            label_metrics["scales"] = scale_metrics(pred_mask, ref, spec.scales, spacing=spacing)
        metrics[spec.name] = label_metrics
    result = {"reference_file": ref_file, "prediction_file": pred_file, "spacing": list(spacing), "metrics": metrics}
    if undeclared:
        result["undeclared_reference_values"] = [int(v) for v in undeclared]
    return result


def _evaluate_case_star(arguments: tuple[str, str, Sequence[LabelSpec]]) -> dict[str, Any]:
    return evaluate_case(*arguments)


def aggregate_cases(cases: Sequence[dict[str, Any]], labels: Sequence[LabelSpec]) -> dict[str, Any]:
    """Mean, std and median of every metric over cases, per label (and per scale).

    Parameters
    ----------
    cases : sequence of dict
        Results of :func:`evaluate_case`.
    labels : sequence of LabelSpec

    Returns
    -------
    aggregate : dict
        ``{label: {metric: summary, "scales": {scale: {"recall": summary, ...}}}}`` with
        summaries from :func:`~nnunet_aux.evaluation.aggregate.summarize`.
    """
    out: dict[str, Any] = {}
    for spec in labels:
        per_label = [case["metrics"][spec.name] for case in cases]
        label_summary: dict[str, Any] = {key: summarize([m[key] for m in per_label]) for key in VESSEL_METRIC_KEYS}
        if spec.scales:
            label_summary["scales"] = {
                scale: {key: summarize([m["scales"][scale][key] for m in per_label]) for key in SCALE_METRIC_KEYS}
                for scale in spec.scales
            }
        out[spec.name] = label_summary
    return out


def write_csv(path: str | os.PathLike, cases: Sequence[dict[str, Any]], labels: Sequence[LabelSpec]) -> None:
    """One row per case and label; per-scale columns ``recall_<scale>``, ``dice_<scale>``.

    Cells of metrics that do not apply or are undefined (a scale absent from the
    reference) are empty.
    """
    scale_names: list[str] = []
    for spec in labels:
        for scale in spec.scales or {}:
            if scale not in scale_names:
                scale_names.append(scale)
    scale_columns = [f"{key}_{scale}" for scale in scale_names for key in SCALE_METRIC_KEYS]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv_format.writer(f)
        writer.writerow(["case", "label", *VESSEL_METRIC_KEYS, *scale_columns])
        for case in cases:
            for spec in labels:
                metrics = case["metrics"][spec.name]
                row = [case["case"], spec.name, *(metrics[key] for key in VESSEL_METRIC_KEYS)]
                scales = metrics.get("scales", {})
                for scale in scale_names:
                    for key in SCALE_METRIC_KEYS:
                        value = scales.get(scale, {}).get(key)
                        row.append("" if value is None else value)
                writer.writerow(row)


def evaluate_folders(
    ref_dir: str | os.PathLike,
    pred_dir: str | os.PathLike,
    output_json: str | os.PathLike | None,
    labels: Mapping[str, int | Sequence[int]] | Sequence[LabelSpec] | None = None,
    dataset_json: str | os.PathLike | Mapping[str, Any] | None = None,
    num_processes: int | None = None,
    csv: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every reference case against the prediction of the same name.

    Cases are matched by file name without ending (``case.nii.gz`` in both folders,
    any mix of ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``, ``.gipl``). Every
    reference case must have a prediction; predictions without a reference are ignored.
    The image grids (size, spacing, origin, direction) of each pair are checked from
    the headers before any metric is computed.

    Parameters
    ----------
    ref_dir, pred_dir : path
        Folders of reference and predicted label maps (e.g. ``labelsTs`` and the output
        of ``nnUNetv2_predict``).
    output_json : path or None
        Summary JSON to write; with ``csv`` a CSV beside it (same name, ``.csv``). None
        writes nothing.
    labels : mapping or sequence of LabelSpec, optional
        Name to value (or values: a region) in both reference and prediction, e.g.
        ``{"vessel": 1, "tumour": 2}``. Takes precedence over ``dataset_json``.
    dataset_json : path or mapping, optional
        nnU-Net dataset.json; region-based labels and the ``scales`` key are handled as
        described in :mod:`nnunet_aux.evaluation.labels`. Without ``labels`` and
        ``dataset_json``, ``pred_dir/dataset.json`` (written by ``nnUNetv2_predict``) or
        the dataset.json beside ``ref_dir`` is used.
    num_processes : int, optional
        Worker processes; default :func:`default_num_processes`. 1 runs in this process.
    csv : bool, optional
        Also write the per-case CSV.
    progress : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    summary : dict
        ``labels``, ``label_source``, ``conventions``, ``metric_per_case`` (list of
        :func:`evaluate_case` results with ``case``) and ``aggregate``
        (:func:`aggregate_cases`). The JSON file holds the same; it never holds NaN.
    """
    ref_dir, pred_dir = os.path.abspath(os.fspath(ref_dir)), os.path.abspath(os.fspath(pred_dir))
    for folder, what in ((ref_dir, "reference"), (pred_dir, "prediction")):
        if not os.path.isdir(folder):
            raise InputError(f"missing {what} folder {folder}")
    specs, label_source = _label_specs(labels, dataset_json, ref_dir, pred_dir)
    ref_cases, pred_cases = find_cases(ref_dir), find_cases(pred_dir)
    if output_json is not None:
        output_json = os.fspath(output_json)
        outputs = [(output_json, "the summary (-o)")]
        if csv:
            outputs.append((os.path.splitext(output_json)[0] + ".csv", "the CSV beside the summary (-o)"))
        inputs = ([(f, "reference") for f in ref_cases.values()] + [(f, "prediction") for f in pred_cases.values()]
                  + ([(label_source, "dataset.json")] if os.path.isfile(label_source) else []))
        check_outputs_apart(outputs, inputs)
        _check_writable(output_json)
    names = match_cases(ref_cases, pred_cases, ref_dir, pred_dir)
    pairs = [(ref_cases[n], pred_cases[n]) for n in names]
    check_same_geometry(pairs)

    num_processes = default_num_processes() if num_processes is None else check_positive_int(num_processes,
                                                                                             "num_processes")
    tasks = [(ref_file, pred_file, specs) for ref_file, pred_file in pairs]
    # spawn, as nnU-Net does (forking a process that holds torch threads can hang); Ctrl-C
    # stops the workers without tracebacks (see nnunet_aux.parallel).
    results = run_parallel(_evaluate_case_star, tasks, num_processes, desc="evaluate", progress=progress)
    undeclared = {name: result.pop("undeclared_reference_values") for name, result in zip(names, results)
                  if "undeclared_reference_values" in result}
    per_case = [{"case": name, **result} for name, result in zip(names, results)]

    summary = {
        "reference_folder": ref_dir,
        "prediction_folder": pred_dir,
        "labels": {spec.name: spec.to_json() for spec in specs},
        "label_source": label_source,
        "conventions": CONVENTIONS,
        "aggregate": aggregate_cases(per_case, specs),
        "metric_per_case": per_case,
    }
    if undeclared:
        summary["undeclared_reference_values"] = undeclared
        if label_source != "labels argument":
            values = sorted({v for found in undeclared.values() for v in found})
            cases = list(undeclared)
            shown = ", ".join(cases[:5]) + (f" ... ({len(cases)} in all)" if len(cases) > 5 else "")
            warn(f"reference value(s) {values} in {len(cases)} case(s) ({shown}) are not declared in {label_source}: "
                 f"they count as background and no label scores them; is this the dataset.json of these references?")
    if output_json is not None:
        text = json.dumps(summary, indent=2, allow_nan=False)
        make_folder(os.path.dirname(os.path.abspath(output_json)))
        if csv:  # the CSV first: the summary, written last, says the evaluation is complete
            csv_path = os.path.splitext(output_json)[0] + ".csv"
            atomic_write(csv_path, lambda tmp: write_csv(tmp, per_case, specs))
        write_text_atomic(output_json, text)
    return summary


def _check_writable(output_json: str) -> None:
    """Fail before any metric is computed when the summary cannot be written.

    Nothing is created yet (an evaluation that fails leaves no trace): the nearest existing
    folder on the way must be a writable folder.
    """
    if os.path.isdir(output_json):
        raise InputError(f"output {output_json} is a folder; give a file name ending in .json")
    check_writable_folder(os.path.dirname(os.path.abspath(output_json)), "output folder")
