"""Does the Skeleton Recall target (CPU skeletonisation in the augmentation workers) slow nnU-Net's training?

Writes a small synthetic scale-decomposed dataset, plans and preprocesses it with nnU-Net
(3d_fullres; the planned U-Net is narrowed to ``--features`` so that a step is CPU-sized),
then, in one process:

1. the skeleton transform alone: ``SkeletonTargetTransform`` on the region targets of real
   augmented training patches (nnU-Net's own training transforms before it), per sample,
   against nnU-Net's whole per-sample training augmentation and against a training step;
2. real nnU-Net training, stock ``nnUNetTrainer`` and ``nnUNetTrainerSkeletonRecall``
   interleaved (``--rounds`` x ``--iterations`` training iterations each), with nnU-Net's
   default number of augmentation workers on this machine (``nnUNet_n_proc_DA`` unset:
   ``min(12, cpu_count)``) unless ``--n-proc-da`` is given. Each ``train_step`` is timed, and
   so is the wait for the next batch between two steps (``next(dataloader_train)``): a wait
   near zero means data loading is not the bottleneck.

Usage::

    python benchmarks/bench_skeleton_loading.py [--shape 48 64 64] [--features 16 32 64 128 128]
        [--iterations 12] [--rounds 2] [--n-proc-da N] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

DATASET_ID = 981


def prepare(root: Path, shape, features, n_cases: int) -> Path:
    """Synthetic dataset, planned and preprocessed; returns the preprocessed folder."""
    from nnunet_aux.conversion import write_synthetic_dataset

    raw = write_synthetic_dataset(DATASET_ID, n_train=n_cases, shape=tuple(shape), spacing=(1.0, 1.0, 1.0), seed=5,
                                  raw_root=os.environ["nnUNet_raw"], true_scales=True, progress=False)
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres",
                    "-np", "1", "-npfp", "1"], check=True, capture_output=True, env=os.environ.copy())
    pre = Path(os.environ["nnUNet_preprocessed"]) / raw.name
    plans_file = pre / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [features[min(i, len(features) - 1)] for i in range(arch["n_stages"])]
    plans["configurations"]["3d_fullres"]["batch_size"] = 2
    plans_file.write_text(json.dumps(plans, indent=1))
    return pre


def make_trainer(name: str, iterations: int):
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, name, "nnUNetPlans", device=torch.device("cpu"))
    trainer.num_epochs = 1
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = 1
    trainer.disable_checkpointing = True
    return trainer


def timed_training(trainer) -> Dict[str, List[float]]:
    """Run nnU-Net's training loop; time every train_step and the wait for each batch after the first."""
    steps, waits, last_end = [], [], [None]
    original = trainer.train_step

    def train_step(batch):
        start = time.perf_counter()
        if last_end[0] is not None:
            waits.append(start - last_end[0])
        out = original(batch)
        last_end[0] = time.perf_counter()
        steps.append(last_end[0] - start)
        return out

    trainer.train_step = train_step
    trainer.run_training()
    return {"steps": steps, "waits": waits}


def transform_seconds(trainer, n_samples: int) -> Dict[str, float]:
    """Per-sample seconds of nnU-Net's training augmentation and of the skeleton transform within it."""
    import torch
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform

    from nnunet_aux.training.skeleton_targets import SkeletonTargetTransform

    if not trainer.was_initialized:
        trainer.initialize()  # builds the tasks, whose target transforms the pipeline then holds
    lm = trainer.label_manager
    cm = trainer.configuration_manager
    rot, dummy_2d, initial_patch, mirror = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    pipeline = trainer.get_training_transforms(
        cm.patch_size, rot, trainer._get_deep_supervision_scales(), mirror, dummy_2d, cm.use_mask_for_norm,
        trainer.is_cascaded, lm.foreground_labels, lm.foreground_regions if lm.has_regions else None,
        lm.ignore_label)
    skeleton = next(t for t in pipeline.transforms if isinstance(t, SkeletonTargetTransform))
    before = [t for t in pipeline.transforms if not isinstance(t, (SkeletonTargetTransform,
                                                                   DownsampleSegForDSTransform))]
    dataset_tr, _ = trainer.get_tr_and_val_datasets()
    keys = list(dataset_tr.identifiers)
    whole, skel = [], []
    for i in range(n_samples):
        data, seg, _, _ = dataset_tr.load_case(keys[i % len(keys)])
        # a patch of the planned size from the case (padded if needed), as nnU-Net's loader cuts it
        size = [max(int(a), int(b)) for a, b in zip(initial_patch, data.shape[1:])]
        image = np.zeros((data.shape[0], *size), np.float32)
        labels = np.zeros((1, *size), np.int16)
        sl = tuple(slice(0, s) for s in data.shape[1:])
        image[(slice(None),) + sl] = data[:]
        labels[(slice(None),) + sl] = seg[:1]
        start = time.perf_counter()
        out = pipeline(image=torch.from_numpy(image), segmentation=torch.from_numpy(labels))
        whole.append(time.perf_counter() - start)
        # the skeleton transform alone, on the targets it sees in the pipeline (after region conversion)
        sample = {"image": torch.from_numpy(image), "segmentation": torch.from_numpy(labels)}
        for t in before:
            sample = t(**sample)
        start = time.perf_counter()
        skeleton(**sample)
        skel.append(time.perf_counter() - start)
        del out
    return {"pipeline_per_sample": float(np.median(whole)), "skeleton_per_sample": float(np.median(skel)),
            "n_samples": n_samples, "patch": list(cm.patch_size)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 64, 64], help="case size (voxels)")
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 128])
    parser.add_argument("--cases", type=int, default=6, help="cases (nnU-Net makes a 5-fold split: at least 5)")
    parser.add_argument("--iterations", type=int, default=12, help="training iterations per run")
    parser.add_argument("--rounds", type=int, default=2, help="stock / SkeletonRecall runs, interleaved")
    parser.add_argument("--samples", type=int, default=8, help="samples for the per-transform timing")
    parser.add_argument("--n-proc-da", type=int, default=None,
                        help="augmentation workers (default: nnU-Net's own default on this machine)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    scratch = tempfile.TemporaryDirectory(prefix="bench_skeleton_")
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[key] = os.path.join(scratch.name, key)
        os.makedirs(os.environ[key], exist_ok=True)
    from nnunet_aux.training import trainer_path

    os.environ["nnUNet_extTrainer"] = trainer_path()
    os.environ.setdefault("nnUNet_compile", "false")
    if args.n_proc_da is not None:
        os.environ["nnUNet_n_proc_DA"] = str(args.n_proc_da)
    else:
        os.environ.pop("nnUNet_n_proc_DA", None)
    t0 = time.perf_counter()
    prepare(Path(scratch.name), args.shape, args.features, args.cases)
    print(f"[prepared in {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)

    from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

    names = {"stock": "nnUNetTrainer", "skeleton": "nnUNetTrainerSkeletonRecall"}
    transforms = transform_seconds(make_trainer(names["skeleton"], 1), args.samples)
    runs = {k: {"steps": [], "waits": []} for k in names}
    for r in range(args.rounds):
        for key, name in names.items():
            with contextlib.redirect_stdout(io.StringIO()):
                trainer = make_trainer(name, args.iterations)
                timing = timed_training(trainer)
            # the first step waits for the workers to start; it is not counted
            runs[key]["steps"] += timing["steps"][1:]
            runs[key]["waits"] += timing["waits"]
            print(f"[round {r + 1}: {key} step {np.median(timing['steps'][1:]):.2f} s, "
                  f"wait {np.median(timing['waits']):.3f} s]", file=sys.stderr, flush=True)
    step = {k: float(np.median(v["steps"])) for k, v in runs.items()}
    wait = {k: float(np.median(v["waits"])) for k, v in runs.items()}
    wait_mean = {k: float(np.mean(v["waits"])) for k, v in runs.items()}
    n_proc = get_allowed_n_proc_DA()
    print(f"augmentation workers: {n_proc} (nnUNet_n_proc_DA {'set' if args.n_proc_da is not None else 'unset'}), "
          f"{os.cpu_count()} CPUs, patch {transforms['patch']}, batch 2, features {tuple(args.features)}")
    print(f"per sample: nnU-Net's training augmentation {transforms['pipeline_per_sample'] * 1e3:.0f} ms, "
          f"of which the skeleton transform {transforms['skeleton_per_sample'] * 1e3:.0f} ms "
          f"(= {100 * transforms['skeleton_per_sample'] / step['stock']:.1f} % of a stock step; one batch = 2 samples)")
    print("\n| trainer | train_step median (s) | step ratio | wait for the next batch, median / mean (s) |")
    print("|---|---|---|---|")
    for k in names:
        print(f"| {names[k]} | {step[k]:.2f} | {step[k] / step['stock']:.3f} | {wait[k]:.3f} / {wait_mean[k]:.3f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "transforms": transforms, "runs": runs, "n_proc_DA": n_proc}, f, indent=1)
    scratch.cleanup()


if __name__ == "__main__":
    main()
