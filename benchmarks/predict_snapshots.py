"""Predict test images with every learning-curve snapshot of one nnU-Net training (issue #23).

The outcome trainers (``benchmarks/outcome_trainers``) save ``snapshot_<iterations>.pth`` in
nnU-Net's own checkpoint format and list them in ``snapshots.json``. This script loads
nnU-Net's predictor once, preprocesses the input folder once, and predicts it with each snapshot
in turn (as ``nnUNetv2_predict -chk snapshot_<iterations>.pth`` would, with nnU-Net's own
preprocessing, sliding window and export, without paying nnU-Net's start-up, its worker
processes and the preprocessing for every snapshot), into ``OUTPUT/it_<iterations>/``; a folder is marked complete with
``.done`` and skipped on a re-run, a half-written one is redone.

Example::

    python benchmarks/predict_snapshots.py -m .../nnUNetTrainer_outcome__nnUNetPlans_curves__3d_fullres \\
        -f 0 -i imagesTs -o snapshot_predictions -device cpu
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

SNAPSHOTS_FILE = "snapshots.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model-folder", type=Path, required=True,
                   help="nnU-Net's trainer folder (<trainer>__<plans>__<configuration>), holding fold_<f>/")
    p.add_argument("-f", "--fold", default="0", help="fold whose snapshots are predicted (default: 0)")
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of images in nnU-Net's naming")
    p.add_argument("-o", "--output", type=Path, required=True, help="receives it_<iterations>/ per snapshot")
    p.add_argument("-device", "--device", default="cpu", choices=("cpu", "cuda", "mps"),
                   help="device of the prediction (default: cpu)")
    p.add_argument("--tta", action="store_true", help="test-time mirroring (default off: 8 x the CPU time)")
    return p.parse_args(argv)


def snapshot_list(fold_folder: Path) -> dict[int, str]:
    """Iterations -> checkpoint file name, from ``snapshots.json`` (files that exist only)."""
    path = fold_folder / SNAPSHOTS_FILE
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        snapshots = json.load(f)
    return {int(k): v["checkpoint"] for k, v in sorted(snapshots.items(), key=lambda kv: int(kv[0]))
            if (fold_folder / v["checkpoint"]).is_file()}


def preprocess_cases(predictor, input_folder: Path) -> list[tuple[str, object, dict]]:
    """(case id, preprocessed data, properties) of every case in ``input_folder``, preprocessed once.

    The same preprocessing as ``nnUNetPredictor.predict_from_files`` (the configuration's
    preprocessor, ``run_case`` on each case's channel files), done once for all snapshots.
    """
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    ending = predictor.dataset_json["file_ending"]
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    cases = []
    for files in create_lists_from_splitted_dataset_folder(str(input_folder), ending):
        data, _, properties = preprocessor.run_case(files, None, predictor.plans_manager,
                                                    predictor.configuration_manager, predictor.dataset_json)
        cases.append((Path(files[0]).name[:-(len(ending) + 5)], data, properties))
    return cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    fold_folder = args.model_folder / f"fold_{args.fold}"
    snapshots = snapshot_list(fold_folder)
    if not snapshots:
        print(f"no snapshots listed in {fold_folder / SNAPSHOTS_FILE}", file=sys.stderr)
        return 2
    todo = {it: name for it, name in snapshots.items() if not (args.output / f"it_{it}" / ".done").is_file()}
    print(f"{len(snapshots)} snapshots, {len(todo)} to predict", flush=True)
    if not todo:
        return 0
    # One predictor, one preprocessing of the test cases; each snapshot only swaps the weights
    # (nnU-Net's predictor loads list_of_parameters into its network before every prediction).
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=args.tta,
                                perform_everything_on_device=args.device != "cpu", device=torch.device(args.device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    fold = args.fold if args.fold == "all" else int(args.fold)
    predictor.initialize_from_trained_model_folder(str(args.model_folder), use_folds=(fold,),
                                                   checkpoint_name=next(iter(todo.values())))
    cases = preprocess_cases(predictor, args.input)
    for iterations, name in todo.items():
        out = args.output / f"it_{iterations}"
        if out.is_dir():
            shutil.rmtree(out)  # a killed prediction may have left a half-written file
        out.mkdir(parents=True)
        checkpoint = torch.load(fold_folder / name, map_location="cpu", weights_only=False)
        predictor.list_of_parameters = [checkpoint["network_weights"]]
        for case, data, properties in cases:
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data))  # on the CPU
            export_prediction_from_logits(logits, properties, predictor.configuration_manager,
                                          predictor.plans_manager, predictor.dataset_json, str(out / case), False)
        # as predict_from_files: the prediction folder carries its dataset.json and plans.json
        save_json(predictor.dataset_json, str(out / "dataset.json"), sort_keys=False)
        save_json(predictor.plans_manager.plans, str(out / "plans.json"), sort_keys=False)
        (out / ".done").write_text("ok\n", encoding="utf-8")
        print(f"predicted with {name} -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
