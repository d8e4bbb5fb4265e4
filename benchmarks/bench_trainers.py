"""Cost of the auxiliary-task trainers against stock nnU-Net: step time, memory, FLOPs, loss shares, inference.

Builds stock ``nnUNetTrainer`` and the selected auxiliary trainers (``--trainers``, default all:
``stock``, ``aux`` = ``nnUNetTrainerScaleAux``, ``contrastive`` = ``nnUNetTrainerScaleContrastive``,
``lite`` = ``nnUNetTrainerScaleContrastiveLite``,
``cls`` = ``nnUNetTrainerClsAux``, ``simsiam`` = ``nnUNetTrainerVoxelSimSiam``, ``contrastive+simsiam``
= ``nnUNetTrainerScaleContrastiveSimSiam``, ``contrastive+cls`` = ``nnUNetTrainerScaleContrastiveCls``,
``skeleton`` = ``nnUNetTrainerSkeletonRecall``, ``skeleton-ds`` = ``nnUNetTrainerSkeletonRecallDS``,
``cldice`` = ``nnUNetTrainerSoftClDice``, ``cbdice`` = ``nnUNetTrainerCbDice`` (its distance transforms
included: MONAI's, scipy on the CPU, cuCIM on CUDA when installed),
``contrastive+skeleton`` = ``nnUNetTrainerScaleContrastiveSkeletonRecall``, ``lite+skeleton`` =
``nnUNetTrainerScaleContrastiveLiteSkeletonRecall``, ``clef`` = ``nnUNetTrainerCLEFPretrain``
(self-supervised pretraining, see below); stock is always added, every ratio is against it)
in one process from a hand-written 3d_fullres plan (nnU-Net's plan format, no preprocessed
dataset needed) and the scale data contract's dataset.json, feeds all of them the same batch
and reports, per trainer and relative to stock measured in the same run:

* training step time: median of ``--steps`` ``train_step`` calls after ``--warmup`` calls,
  interleaved (stock, aux, contrastive, ..., stock, ...) so that load drift hits all trainers
  alike; wall time and this process's CPU time (the latter is less sensitive to other jobs on
  a shared machine, but counts OpenMP spin-waiting too). The median of the per-round ratios
  (each trainer's step over the stock step of the same round) is given too: it cancels load
  changes slower than one round;
* forward+backward FLOPs of one ``train_step`` (``torch.utils.flop_counter.FlopCounterMode``:
  convolutions, transposed convolutions and matrix products; elementwise work not counted),
  and (time ratio) / (FLOP ratio), the cost beyond the added arithmetic (target <= 1.10).
  Issue #4's targets in step time: ClsAux <= 1.03 x stock, VoxelSimSiam <= 1.10 x stock;
* memory: on CUDA the step's peak allocated memory (``torch.cuda.max_memory_allocated``);
  on the CPU, where torch keeps no allocator statistics, (a) the bytes autograd saves for
  backward in one forward + loss (distinct storages, via ``saved_tensors_hooks``;
  deterministic) and (b) the peak RSS of the first training step above the RSS before it
  (``VmHWM`` reset through ``/proc/self/clear_refs``), each trainer in its own fresh
  subprocess (includes gradients, momentum buffers and the allocator's caching);
* each auxiliary loss's own share of its trainer's step (target < 5 %), forward + backward
  on the step's real head outputs (as leaves) and targets, against the trainer's median
  step time: the scale contrastive loss (``ScaleTask._contrastive_loss``, plus once at its
  full anchor budget, labels that give every scale enough voxels: its upper bound), the
  classification focal loss with its presence targets (``ClsTask.compute_losses``) and the
  voxel SimSiam feature loss with its class maps and voxel sampling
  (``SimSiamTask.compute_losses``); for CLEF the affine ``T`` alone (drawing ``theta``, warping
  the image, warping the feature map forward and backward, the validity mask; target < 10 %)
  and its three losses with the feature warp (forward + backward to the features);
* inference: each trainer's checkpoint network is nnU-Net's own (same parameter names,
  shapes and count; its weights load strictly into a stock-built network and give the same
  output), and a forward of one patch in eval mode takes the same time.

CLEF (``nnUNetTrainerCLEFPretrain``) runs the U-Net twice per step, on the patch ``X`` and on
``T(X)`` (``T`` a random affine), because its equivariance loss compares ``T(f(X))`` with
``f(T(X))`` (CLEF paper, Sect. 2.2, Eq. 2): its FLOP ratio is about 2 by design, its step-time
target is <= 2.2 x stock (the second pass and nothing more), and the printed output says so
under the step table. It trains no segmentation (no deep supervision, labels unused), so it
gets the same image batch and ignores the targets.

Targets are made as nnU-Net makes them: a synthetic label patch per sample
(``nnunet_aux.synthetic.generate_case``, all three vessel scales and a tumour present, at
2 x 1.6 x 1.6 mm with vessels of radius >= 2.5 mm so that every scale survives down to the
lowest deep-supervision level, where the contrastive loss samples its anchors) goes
through each trainer's own validation transforms (region conversion, deep-supervision
downsampling), so stock, ClsAux and VoxelSimSiam get [vessel, tumour] and the scale
trainers [vessel, tumour, scale 1, scale 2, scale 3] per level.

``torch.compile`` follows nnU-Net's ``nnUNet_compile`` variable, which this script sets to
false unless it is set: nnU-Net compiles by default on CUDA, so run with ``nnUNet_compile=true``
to measure what a default GPU training does (the auxiliary heads are compiled with the network;
the auxiliary losses run eagerly; saved activations are then not reported; ``--no-flops``
skips the FLOP count, which the compiled graph may not survive).

Usage::

    python benchmarks/bench_trainers.py [--trainers stock cls simsiam ...] [--patch 48 64 64]
        [--features 16 32 64 128 128] [--batch 2] [--steps 10] [--warmup 2] [--threads 2]
        [--device cpu|cuda] [--seed 0] [--no-rss] [--no-flops] [--json PATH]

    python benchmarks/bench_trainers.py --trainers clef    # CLEF against stock

The smallest run that works (seconds; proves the script, measures nothing)::

    python benchmarks/bench_trainers.py --trainers clef --patch 16 32 32 --features 8 16 32
        --batch 1 --steps 1 --warmup 0 --threads 1 --no-rss    (one command line)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

import numpy as np
from bench_common import make_plans, step_flops, timed  # benchmarks/ is on sys.path when a script here runs

#: short name -> trainer class (stock first: the reference of every ratio)
TRAINER_CLASSES = {
    "stock": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer.nnUNetTrainer",
    "aux": "nnunet_aux.training.trainers.nnUNetTrainerScaleAux",
    "contrastive": "nnunet_aux.training.trainers.nnUNetTrainerScaleContrastive",
    "lite": "nnunet_aux.training.trainers.nnUNetTrainerScaleContrastiveLite",
    "cls": "nnunet_aux.training.trainers.nnUNetTrainerClsAux",
    "simsiam": "nnunet_aux.training.trainers.nnUNetTrainerVoxelSimSiam",
    "contrastive+simsiam": "nnunet_aux.training.trainers.nnUNetTrainerScaleContrastiveSimSiam",
    "contrastive+cls": "nnunet_aux.training.trainers.nnUNetTrainerScaleContrastiveCls",
    "skeleton": "nnunet_aux.training.trainers.nnUNetTrainerSkeletonRecall",
    "skeleton-ds": "nnunet_aux.training.trainers.nnUNetTrainerSkeletonRecallDS",
    "cldice": "nnunet_aux.training.trainers.nnUNetTrainerSoftClDice",
    "cbdice": "nnunet_aux.training.trainers.nnUNetTrainerCbDice",
    "contrastive+skeleton": "nnunet_aux.training.trainers.nnUNetTrainerScaleContrastiveSkeletonRecall",
    "lite+skeleton": "nnunet_aux.training.trainers.nnUNetTrainerScaleContrastiveLiteSkeletonRecall",
    "clef": "nnunet_aux.training.trainers.nnUNetTrainerCLEFPretrain",
}
TRAINERS = tuple(TRAINER_CLASSES)
#: step-time targets of issues #4, #5 and #11 (ratio to stock); CLEF's is two U-Net passes plus 10 %
STEP_TARGETS = {"cls": 1.03, "simsiam": 1.10, "skeleton": 1.05, "lite": 1.35, "clef": 2.2}
#: U-Net forward passes per training step, where not one
FORWARD_PASSES = {"clef": 2}


def trainer_class(name: str):
    import importlib

    module, _, cls = TRAINER_CLASSES[name].rpartition(".")
    return getattr(importlib.import_module(module), cls)

DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "vessel": [1, 2, 3], "tumour": 4},
    "regions_class_order": [1, 4],
    "scales": {"vessel": {"small": 1, "medium": 2, "large": 3}},
    "numTraining": 2,
    "file_ending": ".nii.gz",
    "name": "BenchVessels",
}


def make_cases(patch: Sequence[int], batch_size: int, seed: int = 0):
    """One (image, label) patch per sample, CT-normalised image, every scale and a tumour present."""
    from nnunet_aux.synthetic import generate_case

    images, labels = [], []
    s = seed
    while len(labels) < batch_size:
        # coarse voxels and thick vessels: the scale contrastive loss works at the decoder's first
        # stage (1/8 resolution here), where nnU-Net's nearest-exact downsampling drops thin vessels
        case = generate_case(tuple(patch), (2.0, 1.6, 1.6), seed=s, n_tumours=1, min_radius_mm=2.5)
        s += 1
        lab = case.labels()
        if set(np.unique(lab).tolist()) != {0, 1, 2, 3, 4}:
            continue
        # nnU-Net's CTNormalization with the plan's foreground statistics
        img = (np.clip(case.image, -9.4, 251.4) - 130.8) / 75.1
        images.append(img.astype(np.float32))
        labels.append(lab.astype(np.int16))
    return images, labels


def make_batch(trainer, images, labels) -> dict:
    """The batch nnU-Net's data loader would give ``trainer``: its own validation transforms per sample."""
    import torch

    lm = trainer.label_manager
    transforms = trainer.get_validation_transforms(
        trainer._get_deep_supervision_scales(), is_cascaded=trainer.is_cascaded,
        foreground_labels=lm.foreground_labels, regions=lm.foreground_regions if lm.has_regions else None,
        ignore_label=lm.ignore_label)
    samples = [transforms(image=torch.from_numpy(i[None]), segmentation=torch.from_numpy(s[None]))
               for i, s in zip(images, labels)]
    data = torch.stack([t["image"] for t in samples])
    seg = samples[0]["segmentation"]
    target = ([torch.stack([t["segmentation"][k] for t in samples]) for k in range(len(seg))]
              if isinstance(seg, list) else torch.stack([t["segmentation"] for t in samples]))
    return {"data": data, "target": target}


def build_trainer(name: str, plans: dict, device):
    """Construct and initialise one trainer, nnU-Net's console output swallowed."""
    cls = trainer_class(name)
    with contextlib.redirect_stdout(io.StringIO()):
        # nnUNetv2_train adds (and the trainer pops) this key; each trainer gets its own copy
        trainer = cls({**plans, "continue_training": False}, "3d_fullres", 0, DATASET_JSON, device)
        trainer.initialize()
    # nnU-Net switches to train mode in on_train_epoch_start, which the benchmark does not run
    trainer.network.train()
    if getattr(trainer, "training_model", None) is not None:
        trainer.training_model.train()
    return trainer


def is_compiled(trainer) -> bool:
    return hasattr(trainer.network, "_orig_mod") or hasattr(getattr(trainer, "training_model", None), "_orig_mod")


def saved_activation_bytes(trainer, batch) -> int | None:
    """Bytes of the distinct storages autograd saves for backward in one forward + loss.

    None under ``torch.compile`` (the compiled graph saves what it chooses; the hooks see its
    own tensors, not the eager ones).
    """
    import torch

    if is_compiled(trainer):
        return None

    storages: Dict[int, int] = {}

    def pack(t):
        if t.device.type != "meta" and not isinstance(t, torch.nn.Parameter):
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
        return t

    data = batch["data"].to(trainer.device)
    target = batch["target"]
    target = [t.to(trainer.device) for t in target] if isinstance(target, list) else target.to(trainer.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if hasattr(trainer, "_forward_and_losses"):
            with trainer._autocast():
                loss = trainer._forward_and_losses(data, target)[0]
        else:
            with torch.autocast(trainer.device.type, enabled=trainer.device.type == "cuda"):
                loss = trainer.loss(trainer.network(data), target)
    params = {p.untyped_storage().data_ptr() for p in trainer.network.parameters()}
    if getattr(trainer, "aux_tasks", None) is not None:
        params |= {p.untyped_storage().data_ptr() for p in trainer.aux_tasks.parameters()}
    del loss
    return int(sum(v for k, v in storages.items() if k not in params))


#: the loss term of each auxiliary task whose share of a step is measured
MEASURED_TERMS = {"scale": "contrastive", "cls": "cls", "simsiam": "simsiam", "skeleton_recall": "skeleton_recall",
                  "cldice": "cldice", "cbdice": "cbdice"}


def _as_leaves(value):
    """Detached float32 copies of head outputs (tensors, lists or dicts of them) that require grad."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().float().requires_grad_(True) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_as_leaves(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_leaves(v) for k, v in value.items()}
    return value


def aux_loss_seconds(trainer, batch, repeats: int) -> Dict[str, float]:
    """Median time of each measured auxiliary loss alone, forward + backward to its head outputs.

    The head outputs of one forward of the step's batch become leaves; each task gets the
    targets the trainer's ``_forward_and_losses`` hands it. Measured: the scale contrastive
    loss (``ScaleTask._contrastive_loss``, embeddings as leaves; the scale decoders'
    Dice + BCE terms are nnU-Net's loss and not counted), the classification focal loss with
    its presence targets, the SimSiam loss with its class maps and voxel draws.
    """
    import torch

    from nnunet_aux.training.task import AuxBatch

    data, target = trainer._to_device(batch)
    main_target, aux_target, valid = trainer._target_layout.split_all(target)
    valid = valid if trainer.label_manager.has_ignore_label else None
    with torch.no_grad(), trainer._autocast():
        main_output, aux_outputs = trainer.training_model(data)
    seconds = {}
    for (name, task), own in zip(trainer.aux_tasks.items(), trainer._targets_per_task(aux_target)):
        term = MEASURED_TERMS.get(name)
        if term is None or (name == "scale" and task.contrastive is None):
            continue
        aux_batch = AuxBatch(targets=own, valid=valid, main_output=main_output, main_target=main_target,
                             data=data)
        times = []
        for _ in range(repeats + 1):
            if name == "scale":
                out = aux_outputs[name]
                outputs = {"logits": out["logits"], "embeddings": _as_leaves(out["embeddings"])}
                loss_fn = functools.partial(task._contrastive_loss, outputs, own, valid)
            else:
                loss_fn = functools.partial(_loss_term, task, _as_leaves(aux_outputs[name]), aux_batch, term)
            times.append(timed(functools.partial(_backward, trainer, loss_fn), trainer.device))
        seconds[term] = float(np.median(times[1:]))
    return seconds


def _loss_term(task, outputs, aux_batch, term: str):
    return task.compute_losses(outputs, aux_batch)[term]


def _backward(trainer, loss_fn) -> None:
    """``loss_fn()`` under the trainer's autocast, then its backward pass."""
    with trainer._autocast():
        loss = loss_fn()
    loss.backward()


#: what each CLEF part measured by :func:`clef_part_seconds` is, and its target share of a CLEF step (%)
CLEF_PARTS = {"clef_warp": ("affine T: theta, warp of the image and of the features (fwd + bwd), mask", 10.0),
              "clef_losses": ("CLEF's three losses with the feature warp (fwd + bwd to the features)", None)}


def clef_part_seconds(trainer, batch, repeats: int) -> Dict[str, float]:
    """Median times of CLEF's affine ``T`` alone and of its three losses, on the step's real shapes.

    ``clef_warp``: drawing ``theta`` per patch, warping the image (no gradient) and the unit
    feature map (forward and backward to the features), the validity mask. ``clef_losses``:
    decoding, discriminativeness and equivariance losses with the feature warp, forward and
    backward to the features (the U-Net passes not included).
    """
    import torch

    from nnunet_aux.training.task import AuxBatch

    task = trainer.aux_tasks["clef"]
    data = batch["data"].to(trainer.device)
    with torch.no_grad(), trainer._autocast():
        transform = task.sample_transform(data)
        shape = trainer.training_model(data, transform.warp(data))["features"].shape
    aux_batch = AuxBatch(targets=None, valid=None, main_output=None, main_target=None, data=data)
    out = {"clef_warp": [], "clef_losses": []}
    for _ in range(repeats + 1):
        features = torch.nn.functional.normalize(torch.randn(shape, device=data.device), dim=1).requires_grad_(True)
        out["clef_warp"].append(timed(functools.partial(_clef_warp, trainer, task, data, features), trainer.device))
        features.grad = None
        outputs = {"features": features, "decoded": data.clone().requires_grad_(True),
                   "features_warped": features.detach().clone().requires_grad_(True), "transform": transform}
        losses = functools.partial(_clef_losses, task, outputs, aux_batch)
        out["clef_losses"].append(timed(functools.partial(_backward, trainer, losses), trainer.device))
    return {k: float(np.median(v[1:])) for k, v in out.items()}


def _clef_warp(trainer, task, data, features) -> None:
    import torch

    t = task.sample_transform(data)  # theta of each patch
    with trainer._autocast():
        t.warp(data)  # T(X), no gradient needed
        warped = t.warp(features)  # T(f(X))
    t.valid(features.shape[2:])
    warped.backward(torch.ones_like(warped))


def _clef_losses(task, outputs, aux_batch):
    return sum(task.compute_losses(outputs, aux_batch).values())


def part_seconds(trainer, batch, repeats: int) -> Dict[str, float]:
    """Seconds of each measured auxiliary part of ``trainer``'s step: CLEF's warp and losses, or its aux losses."""
    if "clef" in (getattr(trainer, "aux_tasks", None) or {}):
        return clef_part_seconds(trainer, batch, repeats)
    return aux_loss_seconds(trainer, batch, repeats)


def contrastive_budget_seconds(trainer, batch, repeats: int) -> float:
    """Median time of the contrastive loss with its full anchor budget (every scale has enough voxels).

    Embeddings of the real shape and width; labels fill the patch with all scales, so that
    ``voxels_per_scale`` anchors are drawn per scale: the loss's most expensive case.
    """
    import torch

    task = trainer.aux_tasks["scale"]
    data = batch["data"].to(trainer.device)
    with torch.no_grad(), trainer._autocast():
        _, aux_out = trainer.training_model(data)
    emb0 = aux_out["scale"]["embeddings"][0]
    n_scales = len(task.scale_labels)
    # grow the grid until every scale has twice its anchor budget, whatever the plan's first-stage size
    size = list(emb0.shape[2:])
    while emb0.shape[0] * int(np.prod(size)) < 2 * n_scales * task.contrastive.n_per_class:
        size = [2 * d for d in size]
    generator = torch.Generator(device="cpu").manual_seed(0)
    labels = torch.randint(1, n_scales + 1, (emb0.shape[0], *size), generator=generator).to(emb0.device)
    times = []
    for _ in range(repeats + 1):
        emb = torch.randn((emb0.shape[0], emb0.shape[1], *size), device=emb0.device, requires_grad=True)
        loss_fn = functools.partial(task.contrastive, emb, labels)
        times.append(timed(functools.partial(_backward, trainer, loss_fn), trainer.device))
    return float(np.median(times[1:]))


def inference_check(trainers, patch, device, repeats: int) -> dict:
    """Same network for inference: parameters, strict weight transfer, equal outputs, forward time.

    For every auxiliary trainer: its ``self.network`` has stock's parameter names and shapes, its
    weights load strictly into a network built by stock ``nnUNetTrainer.build_network_architecture``
    (what ``nnUNetv2_predict`` does with its checkpoint) and give the same output. Forward times of
    one patch in eval mode without deep supervision, interleaved.
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_aux.heads import unwrap_network

    nets = {}
    for name, t in trainers.items():
        t.set_deep_supervision_enabled(False)
        nets[name] = unwrap_network(t.network).eval()  # the bare network (weights shared), also under compile
    stock_sd = nets["stock"].state_dict()
    x = torch.randn(1, 1, *patch, device=device)
    same_layout, same_output = {}, {}
    for name, net in nets.items():
        if name == "stock":
            continue
        sd = net.state_dict()
        same_layout[name] = list(stock_sd) == list(sd) and all(stock_sd[k].shape == sd[k].shape for k in sd)
        t = trainers[name]
        rebuilt = nnUNetTrainer.build_network_architecture(
            t.plans_manager, t.configuration_manager, len(DATASET_JSON["channel_names"]),
            t.label_manager.num_segmentation_heads, enable_deep_supervision=False).to(device).eval()
        rebuilt.load_state_dict(sd, strict=True)
        with torch.no_grad():
            same_output[name] = bool(torch.allclose(rebuilt(x), net(x), atol=1e-5))
    n_params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
    times = {k: [] for k in nets}
    with torch.no_grad():
        for name in nets:  # warm-up
            nets[name](x)
        for _ in range(repeats):
            for name, net in nets.items():
                times[name].append(timed(functools.partial(net, x), device))
    return {"n_params": n_params, "same_layout": same_layout, "same_output": same_output,
            "seconds": {k: float(np.median(v)) for k, v in times.items()}}


def _rss_kib(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process, KiB, from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(name: str, args) -> None:
    """Subprocess body: peak RSS of the first training step of one trainer above the RSS before them (JSON)."""
    import gc

    import torch

    torch.set_num_threads(args.threads)
    plans = make_plans(args.patch, args.features, args.batch)
    cases = np.load(args.cases)
    trainer = build_trainer(name, plans, torch.device("cpu"))
    batch = make_batch(trainer, list(cases["images"]), list(cases["labels"]))
    del cases
    gc.collect()
    before = _rss_kib("VmRSS")
    try:
        # Linux >= 4.0: writing 5 resets the peak (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    # the first step's peak: activations, gradients and the optimizer's momentum buffers
    trainer.train_step(batch)
    after = _rss_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"trainer": name, "before_kib": before, "peak_kib": after, "peak_reset": reset}))


def rss_growth(args, names: Sequence[str], images, labels, scratch: str) -> Dict[str, float]:
    """Run :func:`rss_child` once per trainer in a fresh interpreter; MiB of peak RSS above the start."""
    path = os.path.join(scratch, "cases.npz")
    np.savez(path, images=np.stack(images), labels=np.stack(labels))
    out = {}
    for name in names:
        cmd = [sys.executable, os.path.abspath(__file__), "--_rss-child", name, "--_cases", path,
               "--patch", *map(str, args.patch), "--features", *map(str, args.features),
               "--batch", str(args.batch), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"RSS subprocess for {name} failed:\n{proc.stderr[-3000:]}")
        r = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
        out[name] = (r["peak_kib"] - r["before_kib"]) / 1024
    return out


def selected_trainers(requested: Sequence[str] | None) -> List[str]:
    """The trainers to run, in :data:`TRAINERS` order, stock always first (every ratio is against it)."""
    requested = set(requested or TRAINERS)
    unknown = requested - set(TRAINERS)
    if unknown:
        raise SystemExit(f"unknown trainers {sorted(unknown)}; choose from {list(TRAINERS)}")
    return [name for name in TRAINERS if name == "stock" or name in requested]


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Every ratio is against stock nnUNetTrainer measured in the same run. 'clef' "
               "(nnUNetTrainerCLEFPretrain) runs the U-Net twice per step (on X and on T(X)), so its FLOP ratio "
               "is about 2 by design. nnUNet_compile is false unless set in the environment. The module "
               "docstring says what every figure is.")
    parser.add_argument("--trainers", nargs="+", default=None, metavar="NAME",
                        help=f"trainers to compare with stock (default all; stock is always added): "
                             f"{' '.join(TRAINERS)}")
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 64], metavar=("Z", "Y", "X"),
                        help="patch size of the plan (default 48 64 64)")
    parser.add_argument("--features", type=int, nargs="+", default=[16, 32, 64, 128, 128], metavar="N",
                        help="features per U-Net stage, one per stage (default 16 32 64 128 128)")
    parser.add_argument("--batch", type=int, default=2, help="batch size, synthetic patches (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="timed train_step calls per trainer (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed train_step calls per trainer before them (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="device (default cpu); on cuda the step's peak allocated memory is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic batch (default 0)")
    parser.add_argument("--no-rss", action="store_true",
                        help="skip the CPU peak-RSS subprocesses (one fresh interpreter per trainer)")
    parser.add_argument("--no-flops", action="store_true",
                        help="skip the FLOP count (e.g. with nnUNet_compile=true); FLOP ratios print as -")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write every figure to this JSON file")
    parser.add_argument("--_rss-child", dest="rss_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_cases", dest="cases", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def point_nnunet_at(scratch: str) -> None:
    """nnU-Net reads its paths when first imported: point them at a scratch folder first."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[key] = os.path.join(scratch, key)
        os.makedirs(os.environ[key], exist_ok=True)
    os.environ.setdefault("nnUNet_compile", "false")
    # initialize() infers the dataset format from the preprocessed folder's file endings; no data is read
    data_folder = os.path.join(os.environ["nnUNet_preprocessed"], "Dataset999_BenchVessels", "nnUNetPlans_3d_fullres")
    os.makedirs(data_folder, exist_ok=True)
    open(os.path.join(data_folder, "placeholder.b2nd"), "w").close()


def setup_line(args, trainers, batches, names) -> str:
    """What the figures were measured on."""
    import torch

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    line = (f"torch {torch.__version__}, device {args.device} ({name}), {torch_threads()} threads, "
            f"torch.compile {'on' if is_compiled(trainers['stock']) else 'off'}, patch {tuple(args.patch)}, "
            f"batch {args.batch}, features {tuple(args.features)}, "
            f"deep-supervision levels {len(batches['stock']['target'])}")
    scale_trainer = next((k for k in names if "scale" in (getattr(trainers[k], "aux_tasks", None) or {})), None)
    if scale_trainer is not None:
        lowest = batches[scale_trainer]["target"][-1]
        line += f", scale voxels at the lowest level {lowest[:, 2:].sum(dim=(0, 2, 3, 4)).tolist()}"
    return line


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def time_steps(trainers, batches, names, args, device) -> dict:
    """Step wall and CPU times, interleaved (one step of each trainer per round), and on CUDA peak memory."""
    import torch

    wall = {k: [] for k in names}
    cpu = {k: [] for k in names}
    peak_mib = {}
    for i in range(args.warmup + args.steps):
        for name in names:
            t, b = trainers[name], batches[name]
            measure_peak = device.type == "cuda" and i == args.warmup
            if measure_peak:
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            start_cpu = time.process_time()
            seconds = timed(functools.partial(t.train_step, b), device)
            if measure_peak:
                peak_mib[name] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
            if i >= args.warmup:
                wall[name].append(seconds)
                cpu[name].append(time.process_time() - start_cpu)
        if i >= args.warmup:
            print(f"[round {i - args.warmup + 1}/{args.steps}: "
                  + ", ".join(f"{k} {wall[k][-1]:.2f} s" for k in names) + "]", file=sys.stderr, flush=True)
    # each round's step over the stock step of the same round: cancels load changes slower than a round
    round_ratios = {k: np.array(wall[k]) / np.array(wall["stock"]) for k in names}
    return {"wall": wall, "cpu": cpu, "peak_mib": peak_mib, "round_ratios": round_ratios,
            "step": {k: float(np.median(v)) for k, v in wall.items()},
            "step_cpu": {k: float(np.median(v)) for k, v in cpu.items()},
            "round_ratio": {k: float(np.median(v)) for k, v in round_ratios.items()}}


def _iqr(values) -> float:
    return float(np.subtract(*np.percentile(values, [75, 25])))


def _num(value: float, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is not a number (FLOPs not counted)."""
    return "-" if value is None or not np.isfinite(value) else format(value, spec)


def print_step_table(r: dict, names, class_names) -> None:
    flops, step, step_cpu, wall = r["flops"], r["step"], r["step_cpu"], r["wall"]
    print("\n| trainer | trainable parameters | GFLOP fwd+bwd | FLOP ratio | step wall time (s), median (IQR) "
          "| wall ratio | per-round wall ratio, median (IQR) | **wall / FLOP** | step CPU time (s) | CPU ratio "
          "| CPU / FLOP | step-time target |")
    print("|---" * 12 + "|")
    for k in names:
        fr, wr, cr = flops[k] / flops["stock"], step[k] / step["stock"], step_cpu[k] / step_cpu["stock"]
        target = f"<= {STEP_TARGETS[k]:.2f}" if k in STEP_TARGETS else ""
        print(f"| {class_names[k]} | {r['n_params'][k]:,} | {_num(flops[k] / 1e9, '.1f')} | {_num(fr, '.3f')} "
              f"| {step[k]:.2f} ({_iqr(wall[k]):.2f}) | {wr:.3f} | {r['round_ratio'][k]:.3f} "
              f"({_iqr(r['round_ratios'][k]):.3f}) | **{_num(wr / fr, '.2f')}** "
              f"| {step_cpu[k]:.2f} | {cr:.3f} | {_num(cr / fr, '.2f')} | {target} |")
    for k in names:
        if k in FORWARD_PASSES:
            print_passes_note(r, k, class_names[k])


def print_passes_note(r: dict, k: str, class_name: str) -> None:
    """Why a trainer that runs the U-Net more than once per step costs what it does (CLEF: twice)."""
    passes, fr = FORWARD_PASSES[k], r["flops"][k] / r["flops"]["stock"]
    wr = r["step"][k] / r["step"]["stock"]
    times = "twice" if passes == 2 else f"{passes} times"
    print(f"\n{class_name} runs the U-Net {times} per step, on the patch X and on T(X) (T a random affine), "
          f"because its equivariance loss compares T(f(X)) with f(T(X)) (CLEF paper, Sect. 2.2, Eq. 2); it "
          f"trains no segmentation (no deep supervision, labels unused). So its FLOP ratio is about {passes} by "
          f"design (here {_num(fr, '.2f')}), its step-time target is <= {STEP_TARGETS[k]:.1f} x stock (the "
          f"second pass and nothing more; here {wr:.2f}), wall / FLOP ({_num(wr / fr, '.2f')}; 1.00 = "
          f"nothing beyond the arithmetic) is what it costs beyond "
          f"the second pass, and the second pass keeps its activations for backward too (memory below).")
    hp = r.get("clef_settings")
    if hp:
        print(f"CLEF settings: feature_dim {hp['feature_dim']}, anchors {hp['n_anchors']}, leaves {hp['n_leaves']}")


def print_memory_table(r: dict, names, class_names) -> None:
    saved, rss, peak_mib = r["saved_mib"], r["rss_mib"], r["peak_mib"]
    header = "\n| trainer |" + (" saved activations (MiB) | ratio |" if saved else "")
    header += " peak RSS above start, 1 step (MiB) | ratio |" if rss else ""
    header += " step peak allocated (MiB) | ratio |" if peak_mib else ""
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for k in names:
        row = f"| {class_names[k]} |"
        if saved:
            row += f" {saved[k]:.0f} | {saved[k] / saved['stock']:.2f} |"
        if rss:
            row += f" {rss[k]:.0f} | {rss[k] / rss['stock']:.2f} |"
        if peak_mib:
            row += f" {peak_mib[k]:.0f} | {peak_mib[k] / peak_mib['stock']:.2f} |"
        print(row)


def print_losses_and_inference(r: dict, trainers, names, class_names, patch) -> None:
    step = r["step"]
    print("\n| trainer | auxiliary part (forward + backward) | ms | share of the trainer's step | target |")
    print("|---" * 5 + "|")
    for k, terms in r["loss_seconds"].items():
        for term, seconds in terms.items():
            what, target = CLEF_PARTS.get(term, (term, 5.0))
            print(f"| {class_names[k]} | {what} | {seconds * 1e3:.1f} | {100 * seconds / step[k]:.2f} % "
                  f"| {'' if target is None else f'< {target:.0f} %'} |")
    print()
    budget, contrastive_trainer = r["contrastive_budget_seconds"], r["contrastive_trainer"]
    if budget is not None:
        scale = trainers[contrastive_trainer].aux_tasks["scale"]
        print(f"contrastive loss at its full anchor budget ({scale.contrastive.n_per_class} per scale, "
              f"{len(scale.scale_labels)} scales): {budget * 1e3:.1f} ms = "
              f"{100 * budget / step[contrastive_trainer]:.2f} % of a {class_names[contrastive_trainer]} step "
              f"(upper bound)")
    inference = r["inference"]
    s = inference["seconds"]
    for k in names[1:]:
        print(f"inference network of {class_names[k]}: {inference['n_params'][k]:,} parameters "
              f"(stock {inference['n_params']['stock']:,}), same names and shapes: {inference['same_layout'][k]}, "
              f"its weights in a stock-built network give the same output: {inference['same_output'][k]}; "
              f"forward of one {tuple(patch)} patch {s[k]:.3f} s vs stock {s['stock']:.3f} s, "
              f"ratio {s[k] / s['stock']:.2f}")


class _Phases:
    """Progress on stderr, so that stdout holds only the results: seconds since the previous phase."""

    def __init__(self) -> None:
        self.clock = time.perf_counter()

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        print(f"[{what}: {now - self.clock:.0f} s]", file=sys.stderr, flush=True)
        self.clock = now


def measure(args, names: List[str], trainers, batches, phase) -> dict:
    """Every figure of the run, keyed as in the JSON file (steps, FLOPs, memory, parts, inference)."""
    r = time_steps(trainers, batches, names, args, trainers["stock"].device)
    r["n_params"] = {k: sum(p.numel() for p in t._trainable_parameters()) if hasattr(t, "_trainable_parameters")
                     else sum(p.numel() for p in t.network.parameters()) for k, t in trainers.items()}
    phase("timed steps")
    r["flops"] = {k: float("nan") if args.no_flops else step_flops(trainers[k], batches[k]) for k in names}
    phase("FLOP count")
    saved = {k: saved_activation_bytes(trainers[k], batches[k]) for k in names}
    r["saved_mib"] = None if any(v is None for v in saved.values()) else {k: v / 2 ** 20 for k, v in saved.items()}
    phase("saved activations")
    repeats = max(args.steps, 5)
    r["loss_seconds"] = {k: part_seconds(trainers[k], batches[k], repeats) for k in names if k != "stock"}
    r["contrastive_trainer"] = next((k for k in names if "contrastive" in r["loss_seconds"].get(k, {})), None)
    r["contrastive_budget_seconds"] = None if r["contrastive_trainer"] is None else contrastive_budget_seconds(
        trainers[r["contrastive_trainer"]], batches[r["contrastive_trainer"]], repeats)
    r["clef_settings"] = trainers["clef"].aux_hyperparameters()["clef"] if "clef" in trainers else None
    phase("auxiliary losses")
    r["inference"] = inference_check(trainers, args.patch, trainers["stock"].device, max(args.steps // 2, 3))
    phase("inference")
    return r


def _finite_or_none(values: dict) -> dict:
    """FLOPs for JSON: NaN (not counted, ``--no-flops``) becomes null."""
    return {k: (v if np.isfinite(v) else None) for k, v in values.items()}


def write_json(path: str, args, class_names, r: dict) -> None:
    keep = ("n_params", "wall", "cpu", "step", "step_cpu", "round_ratio", "saved_mib", "rss_mib",
            "peak_mib", "loss_seconds", "contrastive_budget_seconds", "inference", "clef_settings")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "trainers": class_names, "flops": _finite_or_none(r["flops"]),
                   **{k: r[k] for k in keep}}, f, indent=1)


def main(argv: List[str] | None = None) -> None:
    args = parse_args(argv)
    names = selected_trainers(args.trainers)
    scratch = tempfile.TemporaryDirectory(prefix="bench_trainers_")
    point_nnunet_at(scratch.name)
    if args.rss_child:
        rss_child(args.rss_child, args)
        return

    import torch

    phase = _Phases()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plans = make_plans(args.patch, args.features, args.batch)
    images, labels = make_cases(args.patch, args.batch, args.seed)
    trainers = {name: build_trainer(name, plans, device) for name in names}
    batches = {name: make_batch(t, images, labels) for name, t in trainers.items()}
    class_names = {k: type(t).__name__ for k, t in trainers.items()}
    phase("setup")
    print(setup_line(args, trainers, batches, names))
    r = measure(args, names, trainers, batches, phase)
    r["rss_mib"] = None if (device.type == "cuda" or args.no_rss) else rss_growth(args, names, images, labels,
                                                                                   scratch.name)
    phase("peak RSS subprocesses")
    print_step_table(r, names, class_names)
    print_memory_table(r, names, class_names)
    print_losses_and_inference(r, trainers, names, class_names, args.patch)
    if args.json:
        write_json(args.json, args, class_names, r)
    scratch.cleanup()


if __name__ == "__main__":
    main()
