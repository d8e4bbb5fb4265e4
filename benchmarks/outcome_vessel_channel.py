"""Diagnostic for the outcome benchmark: score the network's vessel channel alone, before nnU-Net's label map.

nnU-Net turns region probabilities into one label map with ``regions_class_order``: a later
region overwrites an earlier one. In the synthetic datasets the tumour region comes after the
vessel region, so where a network that is still early in training also calls vessel voxels
tumour, the vessels vanish from its output. This script re-predicts the test cases of every
finished run of an ``outcome.py`` work folder with nnU-Net's predictor (no test-time mirroring,
as the benchmark), thresholds the vessel region's probability at 0.5 and scores that mask
against the generator's true scales exactly as the benchmark scores the label map; it prints
both, per trainer and budget, averaged over seeds and test cases.

Example::

    python benchmarks/outcome_vessel_channel.py --workdir benchmarks/out/outcome --regime clinical
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outcome_pipeline import CONFIGURATION, REGIMES, TRAINER_FOLDER, dataset_folder_name  # noqa: E402

VESSEL_MASK_FOLDER = "vessel_channel"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True, help="work folder of a finished outcome.py run")
    p.add_argument("--regime", choices=sorted(REGIMES), required=True, help="which regime of it to score")
    p.add_argument("-np", "--num-processes", type=int, default=2, help="processes of the evaluation (default 2)")
    return p.parse_args(argv)


def vessel_masks(run: Path, images: Path) -> Path:
    """Predict ``images`` with the run's model; write vessel-probability > 0.5 masks (value 1). Cached."""
    import numpy as np
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    out = run / VESSEL_MASK_FOLDER
    if (out / ".done").is_file():
        return out
    out.mkdir(exist_ok=True)
    model = next((run / "nnUNet_results").glob(f"*/*__{CONFIGURATION}"))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    regions = [tuple(np.atleast_1d(r).tolist()) for r in predictor.label_manager.foreground_regions]
    channel = next(i for i, r in enumerate(regions) if len(r) > 1 or r == (1,))  # the vessel region (its scales)
    io = SimpleITKIO()
    for image in sorted(images.glob("*_0000.nii.gz")):
        data, props = io.read_images([str(image)])
        _, probabilities = predictor.predict_single_npy_array(data, props, None, None, True)
        mask = (probabilities[channel] > 0.5).astype(np.uint8)
        io.write_seg(mask, str(out / image.name.replace("_0000.nii.gz", ".nii.gz")), props)
    (out / ".done").write_text("")
    return out


def score(run: Path, truth: Path, masks: Path, num_processes: int) -> dict[str, dict]:
    from outcome_pipeline import flat_metrics

    from nnunet_aux.evaluation import LabelSpec, evaluate_folders, labels_from_dataset_json

    reference = next(s for s in labels_from_dataset_json(truth / "dataset.json") if s.scales)
    spec = LabelSpec("vessel", reference.reference_values, (1,), reference.scales)
    summary = evaluate_folders(truth / "labelsTs", masks, None, labels=[spec], num_processes=num_processes,
                               progress=False)
    return {c["case"]: flat_metrics(c["metrics"]["vessel"]) for c in summary["metric_per_case"]}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from nnunet_aux.training import trainer_path

    regime = REGIMES[args.regime]
    base = args.workdir.absolute() / regime.name
    os.environ["nnUNet_extTrainer"] = os.pathsep.join([str(TRAINER_FOLDER), trainer_path()])
    for key in ("nnUNet_raw", "nnUNet_preprocessed"):
        os.environ.setdefault(key, str(base / key))
    os.environ.setdefault("nnUNet_results", str(base / "nnUNet_results"))
    images = base / "nnUNet_raw" / dataset_folder_name(regime) / "imagesTs"
    truth = base / "truth_raw" / dataset_folder_name(regime)
    table: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for run in sorted(base.glob("runs/seed*/*/*")):
        if not (run / "predictions" / ".done").is_file():
            continue
        print(f"{run.relative_to(base)}: vessel channel", flush=True)
        masks = vessel_masks(run, images)
        channel = score(run, truth, masks, args.num_processes)
        label_map = json.loads((run / "evaluation.json").read_text())["cases"]
        (run / "vessel_channel.json").write_text(json.dumps({"cases": channel}, indent=1))
        budget, trainer = run.parent.name, run.name
        table.setdefault((budget, trainer), []).append((label_map, channel))
    keys = ("dice", "cldice", "recall_small", "recall_medium", "recall_large")
    print("\n| budget | trainer | seeds | " + " | ".join(f"{k}: label map / vessel channel" for k in keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for (budget, trainer), runs in sorted(table.items()):
        cells = []
        for key in keys:
            means = [statistics.fmean(v[key] for v in cases.values() if v.get(key) is not None)
                     for pair in runs for cases in pair]
            cells.append(f"{statistics.fmean(means[0::2]):.3f} / {statistics.fmean(means[1::2]):.3f}")
        print(f"| {budget} | {trainer} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
