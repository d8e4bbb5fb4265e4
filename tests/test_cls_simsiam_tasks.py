"""The classification (CMU-Net) and voxel-level SimSiam tasks on their own: targets, losses, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from test_heads import plain_unet

from nnunet_aux.heads import ClassificationHead, SimSiamHead, encoder_spec
from nnunet_aux.training.targets import TargetLayout
from nnunet_aux.training.task import AuxBatch
from nnunet_aux.training.tasks import (
    ClsTask,
    SimSiamTask,
    default_simsiam_weight,
    presence_accuracy,
    presence_auroc,
    presence_targets,
)
from nnunet_aux.training.tasks.simsiam import class_map, predicted_class_map, resample_classes

FEATURES = (4, 8, 16, 16, 16)


def unet(dim=3, classes=2):
    torch.manual_seed(0)
    return plain_unet(dim=dim, features=FEATURES, classes=classes)


def label_batch(net, present=(1, 2), ignore=None, size=32):
    """A batch of two 32^3 patches with blocks of the given labels; deep-supervision targets as nnU-Net's."""
    x = torch.randn(2, 1, size, size, size)
    labels = torch.zeros(2, 1, size, size, size, dtype=torch.int16)
    for i, value in enumerate(present):
        labels[:, :, 4 + 10 * i:12 + 10 * i, 4:28, 4:28] = value
    if ignore is not None:
        labels[:, :, :, :, :3] = ignore
    targets = [labels[:, :, ::f, ::f, ::f] for f in (1, 2, 4, 8)]
    valid = [t != ignore for t in targets] if ignore is not None else None
    skips = net.encoder(x)
    main = net.decoder(skips)
    return skips, AuxBatch(targets=None, valid=valid, main_output=main, main_target=targets, data=x)


# ------------------------------------------------------------------ presence targets
def test_presence_of_labels_counts_voxels_and_never_the_ignore_label():
    seg = torch.zeros(3, 1, 4, 4, dtype=torch.int16)
    seg[0, 0, 0, :3] = 1  # three voxels of label 1
    seg[1, 0, :, :] = 3  # everything ignored: no structure present
    seg[2, 0, 1, 1] = 2
    expected = torch.tensor([[1., 0.], [0., 0.], [0., 1.]])
    torch.testing.assert_close(presence_targets(seg, labels=[1, 2]), expected)
    torch.testing.assert_close(presence_targets(seg, labels=[1, 2], valid=seg != 3), expected)
    torch.testing.assert_close(presence_targets(seg, labels=[1, 2], threshold=3),
                               torch.tensor([[1., 0.], [0., 0.], [0., 0.]]))
    torch.testing.assert_close(presence_targets(seg, labels=[1, 2], threshold=4), torch.zeros(3, 2))


def test_presence_of_regions_reads_only_the_region_channels_and_the_valid_mask():
    target = torch.zeros(2, 3, 4, 4, dtype=torch.bool)  # two regions + nnU-Net's ignore channel
    target[0, 0, 0, 0] = True
    target[1, 1, 2, 2] = True
    target[:, 2] = True  # the ignore channel is no region
    torch.testing.assert_close(presence_targets(target, n_regions=2), torch.tensor([[1., 0.], [0., 1.]]))
    valid = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    valid[1, 0, 2, 2] = False  # the only voxel of region 1 in sample 1 is ignored
    torch.testing.assert_close(presence_targets(target, n_regions=2, valid=valid), torch.tensor([[1., 0.], [0., 0.]]))


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"), ({"labels": [1], "n_regions": 1}, "exactly one"),
    ({"labels": [1], "threshold": 0}, "threshold"), ({"n_regions": 5}, "n_regions"),
])
def test_presence_targets_reject_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        presence_targets(torch.zeros(1, 2, 4, 4), **kwargs)


def _augment(regions, seed, ignore_label=None):
    """nnU-Net's training augmentation of one 24x32x32 patch, a small label 4 block near a corner."""
    seg = torch.zeros(1, 24, 32, 32, dtype=torch.int16)
    seg[0, 2:20, 8:24, 8:24] = 1
    seg[0, 10:14, 14:18, 14:18] = 2
    seg[0, 0:3, 0:3, 0:3] = 4  # often rotated / scaled out of the patch
    seg[0, 20:, 28:, :] = 5  # the ignore label
    torch.manual_seed(seed)
    np.random.seed(seed)
    transforms = nnUNetTrainer.get_training_transforms(
        (24, 32, 32), (-np.pi, np.pi), [[1, 1, 1], [0.5, 0.5, 0.5]], (0, 1, 2), False, regions=regions,
        ignore_label=ignore_label)
    return [t[None] for t in transforms(image=torch.randn(1, 24, 32, 32), segmentation=seg)["segmentation"]]


def test_presence_targets_follow_nnunet_augmentation():
    """Targets come from the augmented patch: structures moved out of it are absent, ignore never counts."""
    spec = encoder_spec(unet())
    label_task = ClsTask(spec, ["a", "b", "c"], labels=[1, 2, 4], presence_threshold=3)
    region_task = ClsTask(spec, ["ab", "c"], presence_threshold=3)
    layout_labels = TargetLayout(n_main=1, n_aux=0, has_regions=False, ignore_label=5)
    layout_regions = TargetLayout(n_main=2, n_aux=0, has_regions=True, ignore_label=5)
    corner = []
    # seeds where the 27-voxel corner block stays, leaves the patch, is cut to 16 and to 2 voxels
    for seed in (0, 7, 10, 15):
        label_target = _augment(None, seed, ignore_label=5)
        main, _, valid = layout_labels.split_all(label_target)
        got = label_task.targets(AuxBatch(None, valid, None, main, None))
        seg = label_target[0][0, 0].numpy()
        expected = [float((seg == v).sum() >= 3) for v in (1, 2, 4)]
        assert got.tolist() == [expected]
        corner.append(expected[2])
        # the same augmentation (same seed) with nnU-Net's regions and ignore channel
        main, _, valid = layout_regions.split_all(_augment([(1, 2), (4,)], seed, ignore_label=5))
        got = region_task.targets(AuxBatch(None, valid, None, main, None))
        assert got.tolist() == [[float(np.isin(seg, (1, 2)).sum() >= 3), expected[2]]]
    assert corner == [1.0, 0.0, 1.0, 0.0]  # 2 voxels are below the threshold of 3


# ------------------------------------------------------------------ presence metrics
def test_presence_metrics_match_their_definitions():
    rng = np.random.default_rng(0)
    scores = rng.random((20, 3)).round(1)  # ties on purpose
    targets = (rng.random((20, 3)) > 0.4).astype(float)
    pos, neg = scores[targets == 1], scores[targets == 0]
    pairs = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    assert presence_auroc(scores, targets) == pytest.approx(pairs / (pos.size * neg.size))
    assert presence_accuracy(scores, targets) == pytest.approx(np.mean((scores >= 0.5) == (targets == 1)))
    assert np.isnan(presence_auroc(scores, np.ones_like(scores)))  # one class only: undefined
    assert presence_auroc([0.9, 0.1], [1, 0]) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        presence_accuracy(scores, targets[:5])


# ------------------------------------------------------------------ classification task
def test_classification_head_is_gap_then_linear():
    head = ClassificationHead(4, 2)
    x = torch.randn(3, 4, 2, 3, 5)
    torch.testing.assert_close(head(x), head.fc(x.mean((2, 3, 4))))
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(3, 4))


@pytest.mark.parametrize("present", [(), (1,)])
def test_cls_loss_is_finite_with_absent_classes_and_reaches_head_and_encoder(present):
    net = unet(classes=3)
    task = ClsTask(encoder_spec(net), ["a", "b"], labels=[1, 2])
    skips, batch = label_batch(net, present)
    losses = task.compute_losses(task(skips, batch.main_output), batch)
    assert set(losses) == {"cls"} == set(task.loss_weights())
    assert torch.isfinite(losses["cls"]) and losses["cls"] > 0
    losses["cls"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in task.parameters())
    assert all(p.grad is not None for p in net.encoder.parameters())
    decoder_own = [p for m in (net.decoder.stages, net.decoder.transpconvs, net.decoder.seg_layers)
                   for p in m.parameters()]
    assert all(p.grad is None for p in decoder_own)  # the head reads the bottleneck only


def test_cls_task_records_validation_predictions_in_eval_mode_only():
    net = unet(classes=3)
    task = ClsTask(encoder_spec(net), ["a", "b"], labels=[1, 2], presence_threshold=2)
    skips, batch = label_batch(net, (2,), ignore=9)
    task.compute_losses(task(skips, batch.main_output), batch)
    assert task.last_presence is None
    task.eval()
    logits = task(skips, batch.main_output)
    task.compute_losses(logits, batch)
    probabilities, targets = task.last_presence
    torch.testing.assert_close(probabilities, torch.sigmoid(logits.detach()))
    assert targets.tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_cls_task_settings():
    spec = encoder_spec(unet())
    task = ClsTask(spec, ["vessel"], alpha=0.5, gamma=1.0, weight=1.0, presence_threshold=10)
    hp = task.hyperparameters()
    assert (hp["focal_alpha"], hp["focal_gamma"], hp["presence_threshold"], hp["labels"]) == (0.5, 1.0, 10, None)
    with pytest.raises(ValueError, match="presence_threshold"):
        ClsTask(spec, ["vessel"], presence_threshold=0)
    with pytest.raises(ValueError, match="structure names"):
        ClsTask(spec, ["a"], labels=[1, 2])


# ------------------------------------------------------------------ SimSiam task
def test_default_lambda_and_layer_count():
    assert default_simsiam_weight(3) == 10 and default_simsiam_weight(1) == 100
    spec = encoder_spec(unet())
    task = SimSiamTask(spec)
    assert task.stages == [2, 3, 4] and task.weight == 10 and len(task.heads) == 3
    assert SimSiamTask(spec, n_layers=1).loss_weights() == {"simsiam": 100.0}
    with pytest.raises(ValueError, match="n_layers"):
        SimSiamTask(spec, n_layers=6)


def test_simsiam_classes_at_each_stage_resolution():
    """Deep-supervision targets where they exist, the lowest one nearest-downsampled below it."""
    net = unet(classes=3)
    task = SimSiamTask(encoder_spec(net), ignore_label=9)
    skips, batch = label_batch(net, (1, 2), ignore=9)
    outputs = task(skips, batch.main_output)
    shapes = [tuple(p.shape[2:]) for p in outputs["p"]]
    assert shapes == [(8, 8, 8), (4, 4, 4), (2, 2, 2)]
    for shape, level in zip(shapes[:2], (2, 3)):  # the stages with a deep-supervision target
        truth, predicted = task.layer_classes(shape, batch)
        expected = batch.main_target[level][:, 0].long()
        torch.testing.assert_close(truth, torch.where(expected == 9, -1, expected))
        torch.testing.assert_close(predicted, batch.main_output[level].argmax(1))
        assert (truth == -1).any() and (truth == 2).any()
    truth, predicted = task.layer_classes(shapes[2], batch)
    lowest = batch.main_target[3][:, 0].long()
    torch.testing.assert_close(truth, resample_classes(torch.where(lowest == 9, -1, lowest), (2, 2, 2)))
    assert (truth == 1).any()


def test_region_classes_and_predictions_follow_nnunet_region_order():
    regions = torch.zeros(1, 3, 4, dtype=torch.bool)  # two nested regions + ignore channel
    regions[0, 0, :3] = True
    regions[0, 1, 1:3] = True
    valid = torch.tensor([[[True, True, False, True]]])
    assert class_map(regions, n_regions=2, valid=valid).tolist() == [[1, 2, -1, 0]]
    logits = torch.tensor([[[1.0, 1.0, -1.0, -1.0], [-1.0, 2.0, 2.0, -1.0]]])
    assert predicted_class_map(logits, regions=True).tolist() == [[1, 2, 2, 0]]


@pytest.mark.parametrize("present", [(), (1, 2)])
def test_simsiam_loss_is_finite_with_absent_classes_and_reaches_every_head_parameter(present):
    net = unet(classes=3)
    task = SimSiamTask(encoder_spec(net), hidden_channels=8, max_voxels=64, max_false_negatives=32)
    skips, batch = label_batch(net, present)
    losses = task.compute_losses(task(skips, batch.main_output), batch)
    loss = losses["simsiam"]
    assert set(losses) == set(task.loss_weights()) and torch.isfinite(loss)
    if present:  # a mean cosine similarity per layer, summed over 3 layers
        assert -3 <= loss.item() <= 3 and loss.item() != 0
    else:
        assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in task.parameters())
    # encoder stages 2..4 feed the heads; the first two stages only through them
    assert all(p.grad is not None for p in net.encoder.stages[4].parameters())


def test_simsiam_stop_gradient_z_gets_gradient_only_through_p():
    """dL/dz equals the part that flows back through p = pred(z): z's own term is detached."""
    net = unet(classes=3)
    task = SimSiamTask(encoder_spec(net), n_layers=1, hidden_channels=8, max_voxels=64)
    skips, batch = label_batch(net, (1, 2))
    z = task.heads[0].projection(skips[-1])
    p = task.heads[0].prediction(z)
    loss = task.compute_losses({"p": [p], "z": [z]}, batch)["simsiam"]
    grad_p, grad_z = torch.autograd.grad(loss, (p, z), retain_graph=True)
    (through_p,) = torch.autograd.grad(p, z, grad_p)
    torch.testing.assert_close(grad_z, through_p)
    assert grad_z.abs().sum() > 0


def test_simsiam_never_samples_ignored_voxels():
    net = unet(classes=3)
    task = SimSiamTask(encoder_spec(net), hidden_channels=8, max_voxels=64)
    skips, batch = label_batch(net, (1, 2))
    outputs = task(skips, batch.main_output)
    batch.valid = [torch.zeros_like(t, dtype=torch.bool) for t in batch.main_target]
    loss = task.compute_losses(outputs, batch)["simsiam"]
    assert loss.item() == 0.0  # no voxel may be drawn
    loss.backward()  # still attached to every head (DDP needs a gradient for each parameter)
    assert all(p.grad is not None for p in task.parameters())


def test_simsiam_on_2d_plans_and_without_deep_supervision():
    net = unet(dim=2)
    spec = encoder_spec(net)
    head = SimSiamHead(spec, 16, hidden_channels=8)
    assert isinstance(head.projection.layers[0], torch.nn.Conv2d)
    task = SimSiamTask(spec, n_regions=1, hidden_channels=8, include_background=True)
    x = torch.randn(2, 1, 32, 32)
    skips = net.encoder(x)
    net.decoder.deep_supervision = False
    main = net.decoder(skips)
    target = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    target[:, :, 8:24, 8:24] = True
    batch = AuxBatch(None, None, main, target, x)  # single tensors: every stage is downsampled
    loss = task.compute_losses(task(skips, main), batch)["simsiam"]
    assert torch.isfinite(loss) and 0 < abs(loss.item()) <= 3
