"""DDP: network and auxiliary heads synchronised as one module (gloo, two CPU processes).

nnU-Net's trainer forces CUDA under DDP, so the trainer itself cannot run DDP on the CPU.
These tests run the exact module the trainer wraps (``AuxiliaryTrainingModel``: nnU-Net's
U-Net plus the auxiliary tasks) under DDP with gloo, with a rank that holds a single sample,
and check that every gradient equals the average of the ranks' local gradients and that no
parameter goes unused (DDP raises on the next step otherwise). Tasks: the scale task with the
contrastive loss alone, and the scale, classification and SimSiam tasks together (the heads
of nnUNetTrainerScaleContrastiveSimSiam and nnUNetTrainerScaleContrastiveCls at once).

What is synchronised across ranks and what is per rank:

* all-reduced (averaged) by DDP: the gradients of nnU-Net's network and of every head (one
  reducer over ``AuxiliaryTrainingModel``); the base trainer also converts batch norms of the
  heads to ``SyncBatchNorm`` (the plans' instance norms are per sample anyway);
* per rank, nothing gathered: every auxiliary loss is computed from the rank's own samples.
  The scale contrastive loss draws its anchors from the rank's batch; the SimSiam loss draws
  at most ``max_voxels`` voxels per layer from the rank's batch (false negatives of the rank's
  own prediction first) and its class weights ``w_c`` (Eq. 6) come from that rank's draw; the
  classification targets and the focal loss's mean are per rank. So DDP optimises the mean
  over ranks of per-rank losses, as it does for nnU-Net's own loss, and a rank whose batch
  has no foreground contributes an exact zero (still attached to every head);
* nnU-Net's Dice loss gathers its statistics across ranks only with batch Dice.

The tests check this per-rank semantics: each rank's loss terms under DDP equal those of an
unwrapped copy on that rank's batch alone (same random draws), and, for the first step, those
computed in the test process without any process group; one step gives the single-sample rank
no foreground at all.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nnunet_aux.heads import encoder_spec
from nnunet_aux.training.model import AuxiliaryTrainingModel
from nnunet_aux.training.seg_loss import build_region_loss
from nnunet_aux.training.skeleton_targets import tubed_skeleton
from nnunet_aux.training.task import AuxBatch
from nnunet_aux.training.tasks import ClsTask, ScaleTask, SimSiamTask, SkeletonRecallTask, SoftClDiceTask

# nnU-Net's rule under DDP: the lowest output keeps a tiny weight so that its layer is used
DS_WEIGHTS = [0.5713, 0.2857, 0.1428, 1e-6]
STEPS = 3  # the last step only checks that DDP accepts it (it raises if a parameter went unused before)

pytestmark = pytest.mark.slow  # two gloo processes per test (mp.spawn), each importing torch and nnU-Net


def build(tasks):
    from test_heads import plain_unet

    torch.manual_seed(0)
    net = plain_unet(features=(4, 8, 16, 16, 16))
    spec = encoder_spec(net)
    made = {}
    if "scale" in tasks:
        made["scale"] = ScaleTask(spec, net.decoder, [1, 2, 3], ["s", "m", "l"],
                                  lambda: build_region_loss(False, True, False, DS_WEIGHTS), True,
                                  (0.78, 0.48, 0.54), contrastive_weight=0.53, voxels_per_scale=32,
                                  embedding_dim=8)
    if "scale_lite" in tasks:  # nnUNetTrainerScaleContrastiveLite's task: narrow decoders, balanced BCE
        made["scale"] = ScaleTask(spec, net.decoder, [1, 2, 3], ["s", "m", "l"],
                                  lambda: build_region_loss(False, True, False, DS_WEIGHTS, bce_pos_weight="balanced"),
                                  True, (0.78, 0.48, 0.54), contrastive_weight=0.53, voxels_per_scale=32,
                                  embedding_dim=8, decoder_width=0.25)
    if "cls" in tasks:
        made["cls"] = ClsTask(spec, ["vessel", "large"])  # region dataset: structure k = region channel k
    if "simsiam" in tasks:
        # a budget below the rank-0 candidates at the highest SimSiam resolution, so that the draw is partial
        made["simsiam"] = SimSiamTask(spec, n_regions=2, n_layers=3, hidden_channels=8, max_voxels=40,
                                      max_false_negatives=25)
    if "skeleton_recall" in tasks:  # no parameters: reads the main output (two regions) and its skeleton
        made["skeleton_recall"] = SkeletonRecallTask([0, 1], None, deep_supervision_weights=DS_WEIGHTS)
    if "cldice" in tasks:
        made["cldice"] = SoftClDiceTask([0, 1], None)
    return AuxiliaryTrainingModel(net, nn.ModuleDict(made))


def skeletons(main_targets):
    """The tubed skeleton of each region at full resolution, downsampled to every level as the targets are."""
    full = main_targets[0]
    skel = torch.stack([torch.stack([torch.from_numpy(tubed_skeleton(m.numpy())) for m in sample]) for sample in full])
    return [skel[(slice(None), slice(None)) + (slice(None, None, 32 // t.shape[-1]),) * 3] for t in main_targets]


def batch(rank, step):
    g = torch.Generator().manual_seed(100 * rank + step)
    n = 2 if rank == 0 else 1  # rank 1 holds a single sample
    x = torch.randn(n, 1, 32, 32, 32, generator=g)
    labels = torch.randint(0, 4, (n, 4, 4, 4), generator=g).repeat_interleave(8, 1).repeat_interleave(
        8, 2).repeat_interleave(8, 3)
    if rank == 1 and step == 1:
        labels.zero_()  # the single-sample rank sees no foreground: every auxiliary loss is an attached zero
    targets = [torch.stack([labels[:, ::f, ::f, ::f] == s for s in (1, 2, 3)], 1) for f in (1, 2, 4, 8)]
    main_targets = [torch.cat((t.any(1, keepdim=True), t[:, 2:3]), 1) for t in targets]  # two regions
    return x, targets, main_targets


def loss_of(model, main_loss, x, targets, main_targets):
    """The trainer's total loss (``nnUNetTrainerAux._forward_and_losses``) and its detached terms."""
    main, aux = model(x)
    tasks = (model.module if hasattr(model, "module") else model).tasks
    total = main_loss(main, main_targets)
    terms = {"main": total.detach()}
    for name, task in tasks.items():
        # the scale task has region channels, skeleton recall its skeleton channels; the others none
        own = targets if name == "scale" else skeletons(main_targets) if name == "skeleton_recall" else None
        losses = task.compute_losses(aux[name], AuxBatch(own, None, main, main_targets, x))
        weights = task.loss_weights()
        total = total + sum(weights[k] * v for k, v in losses.items())
        terms.update({k: v.detach() for k, v in losses.items()})
    return total, terms


def worker(rank, world, tasks, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = build(tasks)
    ddp = nn.parallel.DistributedDataParallel(model)  # find_unused_parameters=False, as nnU-Net
    main_loss = build_region_loss(False, True, False, DS_WEIGHTS)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    record = []
    for step in range(STEPS):
        x, t, mt = batch(rank, step)
        local = copy.deepcopy(model)  # this rank alone, same weights
        opt.zero_grad()
        torch.manual_seed(step)  # same voxel draws in both copies
        loss, terms = loss_of(ddp, main_loss, x, t, mt)
        loss.backward()
        if step == STEPS - 1:
            break  # DDP accepted this step: no parameter went unused in the steps before
        torch.manual_seed(step)
        local_loss, local_terms = loss_of(local, main_loss, x, t, mt)
        local_loss.backward()
        local_grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in local.parameters()]
        for g in local_grads:
            dist.all_reduce(g)
            g /= world
        record.append({"ddp": [p.grad.clone() for p in ddp.parameters()], "avg_local": local_grads,
                       "missing": [n for n, p in ddp.named_parameters() if p.grad is None],
                       "terms": terms, "local_terms": local_terms})
        opt.step()
    torch.save(record, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def run_ddp(tmp_path, tasks):
    mp.spawn(worker, args=(2, tasks, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def check_synchronised(ranks):
    r0, r1 = ranks
    assert len(r0) == len(r1) == STEPS - 1
    for step in range(STEPS - 1):
        s0, s1 = r0[step], r1[step]
        assert s0["missing"] == [] and s1["missing"] == [], f"step {step}"
        for a, b, ref in zip(s0["ddp"], s1["ddp"], s0["avg_local"]):
            torch.testing.assert_close(a, b)
            torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)
        for s in (s0, s1):  # per-rank losses: each rank's terms are those of its own batch alone
            assert s["terms"].keys() == s["local_terms"].keys()
            for k in s["terms"]:
                torch.testing.assert_close(s["terms"][k], s["local_terms"][k], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_synchronises_heads_and_network(tmp_path):
    check_synchronised(run_ddp(tmp_path, ("scale",)))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_synchronises_light_scale_decoders(tmp_path):
    ranks = run_ddp(tmp_path, ("scale_lite",))
    check_synchronised(ranks)
    names = [n for n, _ in build(("scale_lite",)).named_parameters()]
    idx = [i for i, n in enumerate(names) if ".skip_reduction." in n]
    assert idx and any(ranks[0][0]["ddp"][i].abs().sum() > 0 for i in idx)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_synchronises_cls_and_simsiam_heads_beside_the_scale_task(tmp_path):
    ranks = run_ddp(tmp_path, ("scale", "cls", "simsiam"))
    check_synchronised(ranks)
    (r0, r1) = ranks
    # every head received a gradient in every step (a non-zero one where its loss had something to compare)
    names = [n for n, _ in build(("scale", "cls", "simsiam")).named_parameters()]
    for prefix in ("tasks.cls.", "tasks.simsiam.heads.0.", "tasks.simsiam.heads.2."):
        idx = [i for i, n in enumerate(names) if n.startswith(prefix)]
        assert idx and any(r0[0]["ddp"][i].abs().sum() > 0 for i in idx), prefix
    # step 1: the single-sample rank has no foreground; its SimSiam and contrastive terms are exact zeros,
    # its classification term is not (all-absent targets are a valid prediction task), rank 0's are real
    assert r1[1]["terms"]["simsiam"] == 0 and r1[1]["terms"]["contrastive"] == 0
    assert r1[1]["terms"]["cls"] > 0
    assert r0[1]["terms"]["simsiam"] != 0 and r1[0]["terms"]["simsiam"] != 0
    # per rank, independently of torch.distributed: the first step's terms of each rank are those of
    # the initial model on that rank's batch in this process, where no process group exists
    model, main_loss = build(("scale", "cls", "simsiam")), build_region_loss(False, False, False, DS_WEIGHTS)
    for rank, record in enumerate(ranks):
        torch.manual_seed(0)
        _, terms = loss_of(model, main_loss, *batch(rank, 0))
        for k in terms:
            torch.testing.assert_close(record[0]["terms"][k], terms[k], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_with_skeleton_recall_and_cldice(tmp_path):
    """The parameter-free thin-structure terms keep DDP synchronised; a rank without foreground gives recall 0."""
    ranks = run_ddp(tmp_path, ("skeleton_recall", "cldice"))
    check_synchronised(ranks)
    r0, r1 = ranks
    assert r1[1]["terms"]["skeleton_recall"] == 0  # no skeleton on the single-sample rank in step 1
    assert 0 < r0[1]["terms"]["skeleton_recall"] < 1 and 0 < r0[0]["terms"]["cldice"] < 1
