"""The scale task on its own: losses, missing scales, which embedding each voxel gets."""

from __future__ import annotations

import pytest
import torch
from test_heads import plain_unet, resenc_unet

from nnunet_aux.heads import encoder_spec
from nnunet_aux.training.seg_loss import build_region_loss
from nnunet_aux.training.task import AuxBatch
from nnunet_aux.training.tasks import ScaleTask, default_scale_weights

DS_WEIGHTS = [4 / 7, 2 / 7, 1 / 7, 0]


def make_task(contrastive_weight=0.53, sampling="random", ignore=False, network="plain3d",
              target_downsampling="nearest"):
    torch.manual_seed(0)
    net = {"plain3d": lambda: plain_unet(features=(4, 8, 16, 16, 16)),
           "plain2d": lambda: plain_unet(2, features=(4, 8, 16, 16, 16)),
           "resenc3d": resenc_unet}[network]()
    task = ScaleTask(encoder_spec(net), net.decoder, [1, 2, 3], ["small", "medium", "large"],
                     lambda: build_region_loss(False, False, ignore, DS_WEIGHTS), True, default_scale_weights(3),
                     contrastive_weight=contrastive_weight, sampling=sampling, voxels_per_scale=64,
                     embedding_dim=8, target_downsampling=target_downsampling)
    return net, task


def batch_for(net, task, scales_present=(1, 2, 3), valid=None):
    ndim = encoder_spec(net).ndim
    x = torch.randn(2, 1, *[32] * ndim)
    labels = torch.zeros(2, *[32] * ndim, dtype=torch.long)
    for i, s in enumerate(scales_present):
        labels[(slice(None), slice(8 * i, 8 * i + 8)) + (slice(4, 28),) * (ndim - 1)] = s
    skips = net.encoder(x)
    main = net.decoder(skips)
    targets = []
    for level in main:  # one target per deep-supervision output, as nnU-Net downsamples them
        f = 32 // level.shape[-1]
        lab = labels[(slice(None),) + (slice(None, None, f),) * ndim]
        targets.append(torch.stack([lab == s for s in (1, 2, 3)], 1))
    return skips, AuxBatch(targets=targets, valid=valid, main_output=main, main_target=None, data=x)


def test_paper_weights():
    assert default_scale_weights(3) == (0.78, 0.48, 0.54)
    assert default_scale_weights(4) == (0.6,) * 4


@pytest.mark.parametrize("target_downsampling", ["nearest", "max"])
@pytest.mark.parametrize("network", ["plain3d", "plain2d", "resenc3d"])
def test_losses_are_finite_and_reach_every_parameter(network, target_downsampling):
    net, task = make_task(network=network, target_downsampling=target_downsampling)
    skips, batch = batch_for(net, task)
    losses = task.compute_losses(task(skips, batch.main_output), batch)
    assert set(losses) == {"scale_small", "scale_medium", "scale_large", "contrastive"}
    total = sum(task.loss_weights()[k] * v for k, v in losses.items())
    assert torch.isfinite(total) and losses["contrastive"] > 0
    total.backward()
    # the lowest-resolution outputs have deep-supervision weight 0, as in nnU-Net
    unused = {n for n, p in task.named_parameters() if p.grad is None}
    assert all(".seg_layers.0." in n for n in unused), unused
    assert all(p.grad is not None for p in net.encoder.parameters())


@pytest.mark.parametrize("target_downsampling", ["nearest", "max"])
@pytest.mark.parametrize("present", [(), (2,), (1, 3)])
def test_missing_scales_give_no_nan(present, target_downsampling):
    net, task = make_task(sampling="hard", target_downsampling=target_downsampling)
    skips, batch = batch_for(net, task, present)
    losses = task.compute_losses(task(skips, batch.main_output), batch)
    assert all(torch.isfinite(v) for v in losses.values())
    if len(present) < 2:
        assert losses["contrastive"].item() == 0.0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in task.parameters() if p.grad is not None)


def test_ignored_voxels_enter_no_loss():
    net, task = make_task(ignore=True)
    skips, batch = batch_for(net, task)
    outputs = task(skips, batch.main_output)
    everything_ignored = [torch.zeros(t.shape[0], 1, *t.shape[2:], dtype=torch.bool) for t in batch.targets]
    batch.valid = everything_ignored
    losses = task.compute_losses(outputs, batch)
    assert losses["contrastive"].item() == 0.0  # no voxel may be sampled
    # with every voxel ignored, the BCE term is 0 and only the (masked) Dice term remains
    batch.valid = [~v for v in everything_ignored]
    assert task.compute_losses(outputs, batch)["scale_small"] > losses["scale_small"]


def test_each_voxel_is_embedded_by_its_own_scale_head(monkeypatch):
    net, task = make_task()
    skips, batch = batch_for(net, task)
    outputs = task(skips, batch.main_output)
    seen = {}

    def spy(self, embeddings, labels, valid_mask=None, hardness=None):
        seen["emb"], seen["labels"] = embeddings, labels
        return embeddings.sum() * 0

    monkeypatch.setattr(type(task.contrastive), "forward", spy)
    task._contrastive_loss(outputs, batch.targets, None)
    labels = seen["labels"]
    for s in (1, 2, 3):
        where = labels == s
        assert where.any()
        expected = outputs["embeddings"][s - 1].permute(0, 2, 3, 4, 1)[where]
        got = seen["emb"].permute(0, 2, 3, 4, 1)[where]
        torch.testing.assert_close(got, expected)


def test_lambda_c_zero_builds_no_projection_heads():
    _, task = make_task(contrastive_weight=0.0)
    assert task.projections is None and "contrastive" not in task.loss_weights()
    assert task.hyperparameters()["contrastive_weight"] == 0.0
