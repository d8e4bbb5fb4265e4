"""Cost of CLEF pretraining against a stock nnU-Net training step, and of its affine warp.

Builds stock ``nnUNetTrainer`` and ``nnUNetTrainerCLEFPretrain`` in one process from the same
hand-written 3d_fullres plan (nnU-Net's plan format, PlainConvUNet; no preprocessed dataset
needed) and reports:

* training step time: median of ``--steps`` ``train_step`` calls after ``--warmup`` calls,
  interleaved (stock, CLEF, stock, ...) so that load drift hits both alike; wall time and
  this process's CPU time. Target: CLEF / stock <= 2.2 (the equivariance loss needs a
  second forward pass of the U-Net, nothing more);
* forward + backward FLOPs of one step (``torch.utils.flop_counter.FlopCounterMode``:
  convolutions and matrix products), so the time ratio can be read against the arithmetic;
* on CUDA, the step's peak allocated memory above the start (the second pass keeps its
  activations too);
* the affine ``T`` alone, on the step's real shapes: drawing ``theta``, warping the image,
  warping the feature map (forward and backward) and the validity mask,
  as a share of the CLEF step (target < 10 %); and CLEF's three losses with the feature warp
  (forward + backward to the features) as a share too.

Stock gets nnU-Net's own targets (its validation transforms with deep supervision) made from
a synthetic label patch; CLEF ignores targets. Both get the same CT-normalised image patch.

Usage::

    python benchmarks/bench_clef.py [--patch 48 64 64] [--features 16 32 64 128 128] [--batch 2]
        [--steps 5] [--warmup 1] [--threads 1] [--device cpu|cuda] [--no-flops] [--json FILE]

nnU-Net's ``nnUNet_compile`` is off unless set in the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from typing import Sequence

import numpy as np
from bench_common import make_plans, step_flops, timed  # benchmarks/ is on sys.path when a script here runs

DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "vessel": 1, "tumour": 2},
                "numTraining": 2, "file_ending": ".nii.gz", "name": "BenchCLEF"}
SPACING = [1.0, 0.8, 0.8]


def make_cases(patch: Sequence[int], batch_size: int):
    """One synthetic CT-like patch (image, labels vessel 1 / tumour 2) per sample, CT-normalised."""
    from nnunet_aux.synthetic import generate_case

    images, labels = [], []
    for s in range(batch_size):
        case = generate_case(tuple(patch), tuple(SPACING), seed=s)
        label = np.zeros(case.mask.shape, np.int16)
        label[case.tumour] = 2
        label[case.mask] = 1
        images.append(((np.clip(case.image, -9.4, 251.4) - 130.8) / 75.1).astype(np.float32))
        labels.append(label)
    return images, labels


def build(name: str, plans: dict, device):
    """Construct and initialise one trainer, nnU-Net's console output swallowed."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_aux.training.trainers import nnUNetTrainerCLEFPretrain

    cls = {"stock": nnUNetTrainer, "clef": nnUNetTrainerCLEFPretrain}[name]
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = cls({**plans, "continue_training": False}, "3d_fullres", 0, DATASET_JSON, device)
        trainer.initialize()
    trainer.network.train()
    if getattr(trainer, "training_model", None) is not None:
        trainer.training_model.train()
    return trainer


def make_batch(trainer, images, labels) -> dict:
    """The batch nnU-Net's loader would give ``trainer``: its own validation transforms per sample."""
    import torch

    lm = trainer.label_manager
    transforms = trainer.get_validation_transforms(
        trainer._get_deep_supervision_scales() if trainer.enable_deep_supervision else None,
        is_cascaded=False, foreground_labels=lm.foreground_labels, regions=None, ignore_label=lm.ignore_label)
    samples = [transforms(image=torch.from_numpy(i[None]), segmentation=torch.from_numpy(s[None]))
               for i, s in zip(images, labels)]
    seg = samples[0]["segmentation"]
    target = ([torch.stack([t["segmentation"][k] for t in samples]) for k in range(len(seg))]
              if isinstance(seg, list) else torch.stack([t["segmentation"] for t in samples]))
    return {"data": torch.stack([t["image"] for t in samples]), "target": target}


def transform_seconds(trainer, batch, repeats: int) -> dict:
    """Median times of CLEF's affine T and of its losses, on the step's real shapes."""
    import torch

    task = trainer.aux_tasks["clef"]
    data = batch["data"].to(trainer.device)
    with torch.no_grad(), trainer._autocast():
        transform = task.sample_transform(data)
        outputs = trainer.training_model(data, transform.warp(data))
    shape = outputs["features"].shape
    out = {"warp": [], "losses": []}
    for _ in range(repeats + 1):
        features = torch.nn.functional.normalize(torch.randn(shape, device=data.device), dim=1).requires_grad_(True)

        def warp():
            t = task.sample_transform(data)  # theta of each image
            with trainer._autocast():
                t.warp(data)  # T(X), no gradient needed
                warped = t.warp(features)  # T(f(X))
            t.valid(shape[2:])
            warped.backward(torch.ones_like(warped))

        def losses():
            f = features
            with trainer._autocast():
                terms = task.compute_losses({"features": f, "decoded": data.clone().requires_grad_(True),
                                             "features_warped": f.detach().clone().requires_grad_(True),
                                             "transform": transform}, _AuxBatch(data))
                sum(terms.values()).backward()

        out["warp"].append(timed(warp, trainer.device))
        features.grad = None
        out["losses"].append(timed(losses, trainer.device))
    return {k: float(np.median(v[1:])) for k, v in out.items()}


class _AuxBatch:
    def __init__(self, data):
        self.data = data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 64])
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 128])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (e.g. with nnUNet_compile=true)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()

    scratch = tempfile.TemporaryDirectory()
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[k] = os.path.join(scratch.name, k)
        os.makedirs(os.environ[k], exist_ok=True)
    os.environ.setdefault("nnUNet_compile", "false")
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plans = make_plans(args.patch, args.features, args.batch, dataset_name="Dataset998_BenchCLEF", spacing=SPACING)
    data_folder = os.path.join(os.environ["nnUNet_preprocessed"], plans["dataset_name"], "nnUNetPlans_3d_fullres")
    os.makedirs(data_folder)
    open(os.path.join(data_folder, "case.b2nd"), "w").close()  # nnU-Net infers its dataset class from the files
    t0 = time.time()
    images, labels = make_cases(args.patch, args.batch)
    trainers = {k: build(k, plans, device) for k in ("stock", "clef")}
    batches = {k: make_batch(t, images, labels) for k, t in trainers.items()}
    print(f"setup {time.time() - t0:.1f} s; torch {torch.__version__}, {args.threads} thread(s), device {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), patch {args.patch}, "
          f"features {args.features}, batch {args.batch}, nnUNet_compile={os.environ['nnUNet_compile']}", flush=True)
    for t in trainers.values():
        t.on_train_epoch_start()

    wall = {k: [] for k in trainers}
    cpu = {k: [] for k in trainers}
    peak_mib = {}
    for i in range(args.warmup + args.steps):
        seconds = {}
        for name, t in trainers.items():
            measure_peak = device.type == "cuda" and i == args.warmup
            if measure_peak:
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            start_cpu = time.process_time()
            seconds[name] = timed(lambda: t.train_step(batches[name]), device)
            if measure_peak:
                peak_mib[name] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
            if i >= args.warmup:
                wall[name].append(seconds[name])
                cpu[name].append(time.process_time() - start_cpu)
        print(f"  {'warm-up' if i < args.warmup else 'step'} {i}: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()), flush=True)
    step = {k: float(np.median(v)) for k, v in wall.items()}
    step_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    flops = {k: (float("nan") if args.no_flops else step_flops(trainers[k], batches[k])) for k in trainers}
    parts = transform_seconds(trainers["clef"], batches["clef"], max(args.steps, 3))
    clef_hp = trainers["clef"].aux_hyperparameters()["clef"]

    def iqr(values):
        return float(np.subtract(*np.percentile(values, [75, 25])))

    print(f"\nCLEF settings: feature_dim {clef_hp['feature_dim']}, anchors {clef_hp['n_anchors']}, "
          f"leaves {clef_hp['n_leaves']}")
    print("\n| trainer | GFLOP fwd+bwd | FLOP ratio | step wall (s), median (IQR) | **wall ratio** | step CPU (s) "
          "| CPU ratio |")
    print("|---" * 7 + "|")
    for k in trainers:
        print(f"| {k} | {flops[k] / 1e9:.1f} | {flops[k] / flops['stock']:.2f} | {step[k]:.2f} ({iqr(wall[k]):.2f}) "
              f"| **{step[k] / step['stock']:.2f}** | {step_cpu[k]:.2f} | {step_cpu[k] / step_cpu['stock']:.2f} |")
    if peak_mib:
        print("\nstep peak allocated above the start (MiB): " + ", ".join(
            f"{k} {v:.0f}" for k, v in peak_mib.items()) + f"; ratio {peak_mib['clef'] / peak_mib['stock']:.2f}")
    print(f"\naffine T (theta, warp of image and of features forward + backward, mask): "
          f"{parts['warp'] * 1e3:.0f} ms = **{100 * parts['warp'] / step['clef']:.1f} %** of a CLEF step "
          f"(target < 10 %)")
    print(f"CLEF's three losses with the feature warp (forward + backward to the features): "
          f"{parts['losses'] * 1e3:.0f} ms = {100 * parts['losses'] / step['clef']:.1f} % of a CLEF step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "wall": wall, "cpu": cpu, "flops": flops, "parts_s": parts,
                       "peak_mib": peak_mib,
                       "step_median_s": step, "step_cpu_median_s": step_cpu, "clef": clef_hp}, f, indent=1)
    scratch.cleanup()


if __name__ == "__main__":
    main()
