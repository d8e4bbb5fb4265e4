"""DDP: network and auxiliary heads synchronised as one module (gloo, two CPU processes).

nnU-Net's trainer forces CUDA under DDP, so the trainer itself cannot run DDP on the CPU.
This test runs the exact module the trainer wraps (``AuxiliaryTrainingModel``: nnU-Net's
U-Net plus the scale task with the contrastive loss) under DDP with gloo, with a rank that
holds a single sample, and checks that every gradient equals the average of the ranks'
local gradients and that no parameter goes unused (DDP raises on the next step otherwise).
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nnunet_aux.heads import decoder_convs_per_stage, encoder_spec
from nnunet_aux.training.model import AuxiliaryTrainingModel
from nnunet_aux.training.seg_loss import build_region_loss
from nnunet_aux.training.task import AuxBatch
from nnunet_aux.training.tasks import ScaleTask

# nnU-Net's rule under DDP: the lowest output keeps a tiny weight so that its layer is used
DS_WEIGHTS = [0.5713, 0.2857, 0.1428, 1e-6]


def build():
    from test_heads import plain_unet

    torch.manual_seed(0)
    net = plain_unet(features=(4, 8, 16, 16, 16))
    task = ScaleTask(encoder_spec(net), decoder_convs_per_stage(net), [1, 2, 3], ["s", "m", "l"],
                     lambda: build_region_loss(False, True, False, DS_WEIGHTS), True, (0.78, 0.48, 0.54),
                     contrastive_weight=0.53, voxels_per_scale=32, embedding_dim=8)
    return AuxiliaryTrainingModel(net, nn.ModuleDict({"scale": task}))


def batch(rank, step):
    g = torch.Generator().manual_seed(100 * rank + step)
    n = 2 if rank == 0 else 1  # rank 1 holds a single sample
    x = torch.randn(n, 1, 32, 32, 32, generator=g)
    labels = torch.randint(0, 4, (n, 4, 4, 4), generator=g).repeat_interleave(8, 1).repeat_interleave(
        8, 2).repeat_interleave(8, 3)
    targets = [torch.stack([labels[:, ::f, ::f, ::f] == s for s in (1, 2, 3)], 1) for f in (1, 2, 4, 8)]
    main_targets = [torch.cat((t.any(1, keepdim=True), t[:, 2:3]), 1) for t in targets]  # two regions
    return x, targets, main_targets


def loss_of(model, main_loss, x, targets, main_targets):
    main, aux = model(x)
    task = (model.module if hasattr(model, "module") else model).tasks["scale"]
    total = main_loss(main, main_targets)
    losses = task.compute_losses(aux["scale"], AuxBatch(targets, None, main, main_targets, x))
    weights = task.loss_weights()
    return total + sum(weights[k] * v for k, v in losses.items())


def worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = build()
    local = copy.deepcopy(model)
    ddp = nn.parallel.DistributedDataParallel(model)  # find_unused_parameters=False, as nnU-Net
    main_loss = build_region_loss(False, True, False, DS_WEIGHTS)
    opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
    for step in range(2):  # a second step fails if any parameter went unused in the first
        torch.manual_seed(step)  # same anchor draw in both copies
        x, t, mt = batch(rank, step)
        opt.zero_grad()
        loss_of(ddp, main_loss, x, t, mt).backward()
        if step == 0:
            torch.manual_seed(step)
            loss_of(local, main_loss, x, t, mt).backward()
            local_grads = [p.grad.clone() for p in local.parameters()]
            for g in local_grads:
                dist.all_reduce(g)
                g /= world
            torch.save({"ddp": [p.grad.clone() for p in ddp.parameters()], "avg_local": local_grads,
                        "missing": [n for n, p in ddp.named_parameters() if p.grad is None]},
                       os.path.join(out_dir, f"rank{rank}.pt"))
        opt.step()
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_synchronises_heads_and_network(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert r0["missing"] == [] and r1["missing"] == []
    for a, b, ref in zip(r0["ddp"], r1["ddp"], r0["avg_local"]):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)
