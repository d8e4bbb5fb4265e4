"""DDP pooling of the Skeleton Recall sums (gloo, two CPU processes), as skeleton-recall 1.0.0's AllGatherGrad.

With batch Dice under DDP, their SoftSkeletonRecallLoss gathers the recall's sums over the GPUs: every
rank computes the recall of the whole global batch, and its gradient with respect to its own
probabilities is the sum over ranks of the gradients (nnU-Net's AllGatherGrad), so that after DDP's
averaging the parameters get the gradient of the global recall. Expected values come from the
recall of the concatenated batch in one process, written out here.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnunet_aux.losses import skeleton_recall_loss

WORLD = 2


def rank_data(rank: int):
    """Rank 0 holds two samples, rank 1 a single one: (probabilities, skeleton, valid)."""
    g = torch.Generator().manual_seed(11)
    p = torch.rand(3, 2, 5, 6, 7, generator=g)
    s = (torch.rand(3, 2, 5, 6, 7, generator=g) > 0.6).float()
    valid = torch.rand(3, 1, 5, 6, 7, generator=g) > 0.1
    part = slice(0, 2) if rank == 0 else slice(2, 3)
    return p[part], s[part], valid[part], (p, s, valid)


def global_recall_loss(p, s, valid, smooth=1e-5):
    """1 - mean over classes of (sum p s + eps) / (sum s + eps), sums over every sample of every rank."""
    s = s * valid
    recalls = [((p[:, c] * s[:, c]).sum() + smooth) / (s[:, c].sum() + smooth) for c in range(p.shape[1])]
    return 1 - torch.stack(recalls).mean()


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        p, s, valid, _ = rank_data(rank)
        results = {}
        for ddp in (True, False):
            x = p.clone().requires_grad_(True)
            loss = skeleton_recall_loss(x, s, valid, batch_dice=True, ddp=ddp)
            loss.backward()
            results[ddp] = (loss.detach(), x.grad)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes (mp.spawn)
@pytest.mark.timeout(300)
def test_recall_sums_are_pooled_over_ranks_with_the_all_gather_gradient(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    _, _, _, (p, s, valid) = rank_data(0)
    x = p.clone().requires_grad_(True)
    expected = global_recall_loss(x, s, valid.float())
    expected.backward()
    parts = [slice(0, 2), slice(2, 3)]
    for rank, results in enumerate(ranks):
        loss, grad = results[True]
        # every rank: the loss of the global batch ...
        torch.testing.assert_close(loss, expected.detach(), rtol=1e-6, atol=0)
        # ... and WORLD times its share of the global gradient (DDP's averaging divides by WORLD)
        torch.testing.assert_close(grad, WORLD * x.grad[parts[rank]], rtol=1e-5, atol=1e-10)
        # without pooling: each rank's own batch
        own_loss, own_grad = results[False]
        xr = p[parts[rank]].clone().requires_grad_(True)
        own = global_recall_loss(xr, s[parts[rank]], valid[parts[rank]].float())
        own.backward()
        torch.testing.assert_close(own_loss, own.detach(), rtol=1e-6, atol=0)
        torch.testing.assert_close(own_grad, xr.grad, rtol=1e-5, atol=1e-10)
    assert abs(float(ranks[0][False][0]) - float(ranks[1][False][0])) > 1e-3  # the ranks' own losses differ
