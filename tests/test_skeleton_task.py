"""Skeleton targets and the Skeleton Recall / soft-clDice tasks: known shapes, channel layout, ignore label."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.morphology import skeletonize

from nnunet_aux.training.skeleton_targets import SkeletonTargetTransform, tubed_skeleton
from nnunet_aux.training.task import AuxBatch
from nnunet_aux.training.tasks import SkeletonRecallTask, SoftClDiceTask


def cylinder(shape=(24, 15, 15), radius=4.0, center=(7, 7)):
    z, y, x = np.indices(shape)
    mask = (y - center[0]) ** 2 + (x - center[1]) ** 2 <= radius ** 2
    mask[:3], mask[-3:] = False, False
    return mask


# ------------------------------------------------------------------------------------ the skeleton
def test_3d_skeleton_of_a_cylinder_is_its_axis_and_the_tube_a_diamond():
    mask = cylinder()
    bare = tubed_skeleton(mask, 0)
    zs, ys, xs = np.nonzero(bare)
    assert set(ys.tolist()) == {7} and set(xs.tolist()) == {7}  # the axis
    assert zs.min() >= 3 and zs.max() <= 20 and len(zs) >= 12
    tube = tubed_skeleton(mask, 2)
    # the cross section of the tube in the middle: the 4-connected ball of radius 2 (13 voxels)
    section = tube[12]
    yy, xx = np.nonzero(section)
    assert len(yy) == 13 and set((abs(yy - 7) + abs(xx - 7)).tolist()) == {0, 1, 2}
    assert not (tube & ~mask).any()  # cut to the structure


def test_2d_skeleton_and_bounding_box_equal_the_full_image_computation():
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 50), bool)
    mask[5:12, 3:45] = True
    mask[5:35, 20:26] = True
    mask[rng.random(mask.shape) > 0.97] = False  # small holes
    ours = tubed_skeleton(mask, 0)
    np.testing.assert_array_equal(ours, skeletonize(mask))  # 2D thinning, the box changes nothing
    assert tubed_skeleton(mask, 1).sum() > ours.sum()
    mask3 = cylinder()
    np.testing.assert_array_equal(tubed_skeleton(mask3, 0), skeletonize(mask3))
    assert not tubed_skeleton(np.zeros((5, 6, 7), bool)).any()


def official_skeleton_target(seg: np.ndarray) -> np.ndarray:
    """skeleton-recall 1.0.0's SkeletonTransform(do_tube=True) on a label map: skeleton of seg > 0, dilated with
    the radius-2 diamond, times the label map (label-valued)."""
    union = seg > 0
    if not union.any():
        return np.zeros_like(seg)
    diamond = ndimage.iterate_structure(ndimage.generate_binary_structure(seg.ndim, 1), 2)
    tube = ndimage.binary_dilation(skeletonize(union), structure=diamond)
    return tube * seg


def two_touching_tubes(shape=(24, 20, 20)) -> np.ndarray:
    """Label 1, a tube of radius 3, and label 2, a thinner tube lying against it along its length."""
    z, y, x = np.indices(shape)
    seg = np.zeros(shape, np.int16)
    seg[(y - 9) ** 2 + (x - 8) ** 2 <= 9] = 1
    seg[((y - 9) ** 2 + (x - 12.5) ** 2 <= 2.25) & (seg == 0)] = 2
    seg[:2], seg[-2:] = 0, 0
    return seg


def test_union_targets_equal_the_official_transform_and_differ_from_per_structure_on_touching_labels():
    seg = two_touching_tubes()
    official = official_skeleton_target(seg)
    out = SkeletonTargetTransform(labels=[(1,), (2,)])(segmentation=torch.from_numpy(seg[None]))["segmentation"]
    np.testing.assert_array_equal(out[1].numpy(), official == 1)
    np.testing.assert_array_equal(out[2].numpy(), official == 2)
    per = SkeletonTargetTransform(labels=[(1,), (2,)], mode="per_structure")(
        segmentation=torch.from_numpy(seg[None]))["segmentation"]
    union, own = out[1:].numpy().astype(bool), per[1:].numpy().astype(bool)
    dice = 2 * (union & own).sum() / (union.sum() + own.sum())
    assert dice < 0.9  # one skeleton along the contact against one per tube
    # isolated structures: the same targets
    apart = seg.copy()
    apart[apart == 2] = 0
    apart[:, 15:18, 15:18] = 2
    a = SkeletonTargetTransform(labels=[(1,), (2,)])(segmentation=torch.from_numpy(apart[None]))["segmentation"]
    b = SkeletonTargetTransform(labels=[(1,), (2,)], mode="per_structure")(
        segmentation=torch.from_numpy(apart[None]))["segmentation"]
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="mode"):
        SkeletonTargetTransform(labels=[(1,)], mode="each")


def test_transform_on_a_label_map_with_ignore_label():
    """One channel per label (each skeletonised on its own), appended; ignored voxels are in no structure."""
    seg = np.zeros((1, 24, 15, 15), np.int16)
    seg[0][cylinder()] = 1
    seg[0, :, 0:5, 0:15] = 2  # a slab: second label
    seg[0, 10:14] = 5  # ignore label across the middle
    t = SkeletonTargetTransform(labels=[(1,), (2,)], tube_radius=2, mode="per_structure")
    out = t(segmentation=torch.from_numpy(seg))["segmentation"]
    assert out.shape == (3, 24, 15, 15) and out.dtype == torch.int16
    torch.testing.assert_close(out[0], torch.from_numpy(seg[0]))
    assert out[1].sum() > 0 and out[2].sum() > 0
    assert not (out[1:].bool() & torch.from_numpy(seg[0] == 5)).any()
    assert not (out[1].bool() & torch.from_numpy(seg[0] != 1)).any()
    assert not (out[2].bool() & torch.from_numpy(seg[0] != 2)).any()


def test_transform_on_region_channels_inserts_before_the_ignore_channel():
    mask = torch.from_numpy(cylinder())
    regions = torch.stack([mask, mask & (torch.arange(24)[:, None, None] < 12), torch.zeros_like(mask),
                           torch.zeros_like(mask)])  # 2 main regions, 1 auxiliary region, ignore
    t = SkeletonTargetTransform(channels=[0, 1], insert_at=3, mode="per_structure")
    out = t(segmentation=regions)["segmentation"]
    assert out.shape[0] == 6 and out.dtype == torch.bool
    torch.testing.assert_close(out[:3], regions[:3])
    torch.testing.assert_close(out[5], regions[3])  # the ignore channel stays last
    np.testing.assert_array_equal(out[3].numpy(), tubed_skeleton(cylinder(), 2))
    assert out[4].sum() > 0 and not out[4, 12:].any()
    with pytest.raises(TypeError, match="before deep-supervision"):
        t(segmentation=[regions])
    # union (the default): the tube of the union of the regions, cut to each
    union = SkeletonTargetTransform(channels=[0, 1], insert_at=3)(segmentation=regions)["segmentation"]
    np.testing.assert_array_equal(union[3].numpy(), tubed_skeleton(cylinder(), 2))
    np.testing.assert_array_equal(union[4].numpy(), union[3].numpy() & regions[1].numpy())


# ------------------------------------------------------------------------------------ the tasks
def logits_and_targets(regions: bool, deep=True):
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 3, 16, 16, 16, generator=g, requires_grad=True)]
    logits.append(torch.randn(2, 3, 8, 8, 8, generator=g, requires_grad=True))
    skel = [(torch.rand(2, 2, 16, 16, 16, generator=g) > 0.8), (torch.rand(2, 2, 8, 8, 8, generator=g) > 0.8)]
    return (logits, skel) if deep else (logits[0], skel[0])


@pytest.mark.parametrize("regions", [True, False])
def test_skeleton_recall_task_on_labels_and_regions_with_and_without_deep_supervision(regions):
    from nnunet_aux.losses import skeleton_recall_loss

    logits, skel = logits_and_targets(regions)
    channels = [0, 1] if regions else [1, 2]
    labels = None if regions else [(1,), (2,)]
    task = SkeletonRecallTask(channels, labels, batch_dice=False)
    assert task.extra_target_channels() == 2 and task.target_regions() == []
    transform, = task.target_transforms(4)
    assert transform.insert_at == 4 and (transform.labels == labels) and transform.tube_radius == 2
    batch = AuxBatch(targets=skel, valid=None, main_output=logits, main_target=None, data=None)
    out = task.compute_losses(task(None, logits), batch)["skeleton_recall"]
    p = torch.sigmoid(logits[0][:, :2]) if regions else torch.softmax(logits[0], 1)[:, 1:]
    torch.testing.assert_close(out, skeleton_recall_loss(p, skel[0], batch_dice=False))
    # with nnU-Net's deep-supervision weights: every level with its weight
    ds = SkeletonRecallTask(channels, labels, batch_dice=False, deep_supervision_weights=[0.75, 0.25])
    low = torch.sigmoid(logits[1][:, :2]) if regions else torch.softmax(logits[1], 1)[:, 1:]
    expected = 0.75 * out + 0.25 * skeleton_recall_loss(low, skel[1], batch_dice=False)
    torch.testing.assert_close(ds.compute_losses(ds(None, logits), batch)["skeleton_recall"], expected)
    assert ds.loss_weights() == {"skeleton_recall": 1.0} and not list(ds.parameters())


def test_soft_cldice_task_reads_the_main_target_of_labels_and_regions():
    from nnunet_aux.losses import soft_cldice_loss

    logits, _ = logits_and_targets(True)
    labels = torch.randint(0, 4, (2, 1, 16, 16, 16))  # label 3 plays the ignore label
    valid = labels != 3
    batch = AuxBatch(targets=None, valid=[valid, valid[..., ::2, ::2, ::2]], main_output=logits,
                     main_target=[labels, labels[..., ::2, ::2, ::2]], data=None)
    # the package's per-structure setting: one clDice per foreground label, averaged
    task = SoftClDiceTask([1, 2], [(1,), (2,)], iterations=3, exclude_background=True, per_structure=True)
    out = task.compute_losses(task(None, logits), batch)["cldice"]
    p = torch.softmax(logits[0], 1)[:, 1:]
    target = torch.cat([labels == 1, labels == 2], 1)
    torch.testing.assert_close(out, soft_cldice_loss(p, target, 3, 1.0, valid))
    # the default (their code): background included, sums pooled over all channels, 10 iterations
    task = SoftClDiceTask([1, 2], [(1,), (2,)])
    out = task.compute_losses(task(None, logits), batch)["cldice"]
    full = torch.cat([labels == 0, target], 1)
    torch.testing.assert_close(out, soft_cldice_loss(torch.softmax(logits[0], 1), full, 10, 1.0, valid,
                                                     pool_channels=True))
    # region dataset: the first K target channels (nnU-Net's ignore channel after them is not read)
    regions = torch.cat([labels == 1, labels >= 1, labels == 3], 1)
    task = SoftClDiceTask([0, 1], None)
    out = task.compute_losses(task(None, logits[0][:, :2]),
                              AuxBatch(None, None, logits[0][:, :2], regions, None))["cldice"]
    torch.testing.assert_close(out, soft_cldice_loss(torch.sigmoid(logits[0][:, :2]), regions[:, :2], 10, 1.0,
                                                     pool_channels=True))
    assert task.loss_weights() == {"cldice": 0.5} and task.hyperparameters()["iterations"] == 10


# ------------------------------------------------------------------------------------ in the trainer
def label_dataset_json(ds, ignore=True):
    """The shared scale dataset read as a label dataset: each scale and the tumour its own label."""
    dataset_json = json.loads((ds["preprocessed"] / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["labels"] = {"background": 0, "small": 1, "medium": 2, "large": 3, "tumour": 4}
    if ignore:
        dataset_json["labels"]["ignore"] = 5
    dataset_json.pop("regions_class_order", None)
    return dataset_json


def sample_labels(shape, ignore=True):
    seg = np.zeros(shape, np.int16)
    z, y, x = np.indices(shape)
    seg[(y - shape[1] // 2) ** 2 + (x - shape[2] // 2) ** 2 <= 9] = 1
    seg[(z - shape[0] // 2) ** 2 + (x - shape[2] // 2) ** 2 <= 16] = 2
    seg[(z - shape[0] // 2) ** 2 + (y - 5) ** 2 + (x - 5) ** 2 <= 9] = 4
    if ignore:
        seg[:, :, -6:] = 5
    return torch.from_numpy(seg[None])


@pytest.mark.slow  # needs the shared planned dataset
@pytest.mark.parametrize("trainer_name,regions", [("nnUNetTrainerSkeletonRecall", False),
                                                   ("nnUNetTrainerSkeletonRecall", True),
                                                   ("nnUNetTrainerScaleContrastiveSkeletonRecall", True)])
def test_trainer_pipeline_carries_the_skeleton_through_deep_supervision(nnunet_paths, trainer_name, regions):
    """Training and validation transforms give each structure's tubed skeleton at every deep-supervision level,
    after the region / scale channels and before the ignore channel; a training step uses it."""
    from nnunet_aux.training import trainers

    ds = nnunet_paths
    plans = json.loads((ds["preprocessed"] / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False
    dataset_json = json.loads((ds["preprocessed"] / "dataset.json").read_text(encoding="utf-8"))
    if not regions:
        dataset_json = label_dataset_json(ds)
    trainer = getattr(trainers, trainer_name)(plans, "3d_fullres", 0, dataset_json, torch.device("cpu"))
    trainer.initialize()
    lm = trainer.label_manager
    n_structures = len(lm.foreground_regions) if regions else len(lm.foreground_labels)
    n_scales = 3 if "Scale" in trainer_name else 0
    assert trainer._target_layout.n_aux == n_scales + n_structures
    patch = tuple(trainer.configuration_manager.patch_size)
    ds_scales = trainer._get_deep_supervision_scales()
    kwargs = dict(is_cascaded=False, foreground_labels=lm.foreground_labels,
                  regions=lm.foreground_regions if regions else None, ignore_label=lm.ignore_label)
    seg = sample_labels(patch, ignore=not regions)
    image = torch.randn(1, *patch)
    val = trainer.get_validation_transforms(ds_scales, **kwargs)(image=image.clone(), segmentation=seg.clone())
    rot, dummy_2d, _, mirror = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    train = trainer.get_training_transforms(patch, rot, ds_scales, mirror, dummy_2d, **kwargs)(
        image=image.clone(), segmentation=seg.clone())
    for out in (val, train):
        levels = out["segmentation"]
        assert isinstance(levels, list) and len(levels) == len(ds_scales)
        n_main = len(lm.foreground_regions) if regions else 1
        assert all(level.shape[0] == n_main + n_scales + n_structures for level in levels)
    levels = [t[None] for t in val["segmentation"]]  # a batch of one
    main, aux, valid = trainer._target_layout.split_all(levels)
    own = trainer._targets_per_task(aux)[list(trainer.aux_tasks).index("skeleton_recall")]
    assert [tuple(o.shape[1:2]) for o in own] == [(n_structures,)] * len(ds_scales)
    skeleton = own[0][0]
    if regions:  # vessel region (labels 1-3) and tumour region: the union's tube cut to each
        masks = [np.isin(seg[0].numpy(), r) for r in lm.foreground_regions]
        tube = tubed_skeleton(np.any(masks, 0), 2)
        expected = [tube & m for m in masks]
    else:  # skeleton-recall 1.0.0's target, one channel per label
        official = official_skeleton_target(seg[0].numpy())
        expected = [official == v for v in lm.foreground_labels]
    for k, mask in enumerate(expected):
        np.testing.assert_array_equal(skeleton[k].numpy(), mask)
    assert own[1][0].shape[1:] == levels[1].shape[2:] and own[1].any()  # downsampled with the others
    if not regions:
        assert not skeleton[:, seg[0] == 5].any()
        assert not valid[0][seg[None] == 5].any()
    # a training step on this batch: the skeleton recall term is logged, finite and in (0, 1]
    batch = {"data": torch.stack([val["image"]] * 2), "target": [torch.cat([t] * 2) for t in levels]}
    trainer.network.train()
    trainer.training_model.train()
    terms = trainer.train_step(batch)
    assert 0 < terms["loss_skeleton_recall"] <= 1 and np.isfinite(terms["loss"])


# ------------------------------------------------------------------------------------ against the official trainers
class FixedOutputs(torch.nn.Module):
    """Stands in for network + heads: returns given logits, so that a trainer's loss can be compared on them."""

    def __init__(self, outputs, tasks):
        super().__init__()
        self.outputs, self.tasks = outputs, tasks

    def forward(self, data):
        return self.outputs, {name: task(None, self.outputs) for name, task in self.tasks.items()}


def nnunet_deep_supervision_weights(n: int):
    """nnU-Net's (and cbDice's nnUNetTrainer_CE_DC_CBDC's) output weights: 1, 1/2, 1/4, ..., the last 0, sum 1."""
    w = [1 / 2 ** i for i in range(n)]
    w[-1] = 0
    return [x / sum(w) for x in w]


def official_total(trainer_name, levels, logits, batch_dice, ignore_label, ds_scales):
    """The total loss of the official trainer (or, for clDice, of the official loss added to nnU-Net's) on the
    same logits, and the constant by which the package's total differs (its terms are 1 - x, theirs -x)."""
    from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from test_cbdice import reference_cbdice, reference_foreground
    from test_skeleton_losses import official_cldice_loss, official_recall_loss

    deep = isinstance(logits, list)
    weights = nnunet_deep_supervision_weights(len(logits)) if deep else [1.0]
    logits, targets = (logits, [t[:, :1] for t in levels]) if deep else ([logits], [levels[:, :1]])
    weight_ce = {"nnUNetTrainerCbDice": 2.0, "nnUNetTrainerCbDiceNoDeepSupervision": 3.0}.get(trainer_name, 1.0)
    dc_ce = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                           weight_ce=weight_ce, weight_dice=1, ignore_label=ignore_label,
                           dice_class=MemoryEfficientSoftDiceLoss)
    total = sum(w * dc_ce(z, t) for w, z, t in zip(weights, logits, targets) if w != 0)
    full = targets[0]
    if trainer_name == "nnUNetTrainerSkeletonRecall":  # SkeletonTransform after the downsampling: level 0 only
        skel = torch.stack([torch.from_numpy(official_skeleton_target(s[0].numpy()))[None] for s in full])
        total = total + weights[0] * official_recall_loss(logits[0], skel, batch_dice, seg=full,
                                                          ignore_label=ignore_label)
        return total, weights[0]
    if trainer_name == "nnUNetTrainerSkeletonRecallDS":  # before it: downsampled with the segmentation
        skel = [torch.from_numpy(official_skeleton_target(s[0].numpy()))[None] for s in full]
        per_sample = [DownsampleSegForDSTransform(ds_scales)(segmentation=s)["segmentation"] for s in skel]
        for level, (w, z, t) in enumerate(zip(weights, logits, targets)):
            if w != 0:
                s = torch.stack([p[level] for p in per_sample])
                total = total + w * official_recall_loss(z, s, batch_dice, seg=t, ignore_label=ignore_label)
        return total, sum(w for w in weights if w != 0)
    if trainer_name == "nnUNetTrainerSoftClDice":  # their loss, alpha 0.5, at full resolution
        k = logits[0].shape[1]
        onehot = torch.nn.functional.one_hot(full[:, 0].long(), k).movedim(-1, 1).float()
        return total + 0.5 * official_cldice_loss(onehot, torch.softmax(logits[0].float(), 1)), 0.0
    cb_weight = 2.0 if trainer_name.endswith("NoDeepSupervision") else 1.0
    for w, z, t in zip(weights, logits, targets):
        if w != 0:
            total = total + w * cb_weight * reference_cbdice(reference_foreground(z.float()), t[:, 0])
    return total, cb_weight * sum(weights)


@pytest.mark.slow  # needs the shared planned dataset
@pytest.mark.parametrize("trainer_name,ignore,settings", [
    ("nnUNetTrainerSkeletonRecall", True, {}),
    ("nnUNetTrainerSkeletonRecallDS", True, {}),
    ("nnUNetTrainerSoftClDice", False, {}),
    ("nnUNetTrainerCbDice", False, {}),  # their ignore-label behaviour: test_cbdice.py
    ("nnUNetTrainerCbDiceNoDeepSupervision", False, {}),
])
def test_default_loss_and_gradient_equal_the_official_trainers(nnunet_paths, trainer_name, ignore, settings):
    """Each peer trainer's total loss (nnU-Net's Dice + CE and the peer's term, every deep-supervision level)
    and its gradient on fixed 3D logits with touching labels equal the official implementation's."""
    from test_cbdice import noisy_logits

    from nnunet_aux.training import trainers

    ds = nnunet_paths
    plans = json.loads((ds["preprocessed"] / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False
    trainer = getattr(trainers, trainer_name)(plans, "3d_fullres", 0, label_dataset_json(ds, ignore),
                                              torch.device("cpu"))
    for k, v in settings.items():
        setattr(trainer, k, v)
    trainer.initialize()
    lm = trainer.label_manager
    patch = tuple(trainer.configuration_manager.patch_size)
    ds_scales = trainer._get_deep_supervision_scales() if trainer.enable_deep_supervision else None
    kwargs = dict(is_cascaded=False, foreground_labels=lm.foreground_labels, regions=None,
                  ignore_label=lm.ignore_label)
    transform = trainer.get_validation_transforms(ds_scales, **kwargs)
    seg = sample_labels(patch, ignore=ignore)
    samples = [transform(image=torch.randn(1, *patch), segmentation=s.clone())["segmentation"]
               for s in (seg, torch.flip(seg, (-1,)))]
    if ds_scales is None:
        levels = torch.stack(samples)
    else:
        levels = [torch.stack([s[i] for s in samples]) for i in range(len(ds_scales))]
    n_classes = len(lm.all_labels)

    def make_logits(seed):
        def one(level, k):
            labels = torch.where(level[:, :1] == IGNORE, 0, level[:, :1])
            return noisy_logits(labels, n_classes, seed + k).requires_grad_(True)
        return [one(t, k) for k, t in enumerate(levels)] if ds_scales is not None else one(levels, 0)

    logits = make_logits(7)
    trainer.training_model = FixedOutputs(logits, trainer.aux_tasks).train()
    total, terms, _, _ = trainer._forward_and_losses(torch.zeros(2, 1, *patch), levels)
    as_list = logits if isinstance(logits, list) else [logits]
    ours_grad = torch.autograd.grad(total, as_list, allow_unused=True)
    expected, offset = official_total(trainer_name, levels, as_list if ds_scales else as_list[0],
                                      trainer.configuration_manager.batch_dice, lm.ignore_label, ds_scales)
    expected_grad = torch.autograd.grad(expected, as_list, allow_unused=True)
    ours_grad, expected_grad = ([torch.zeros_like(z) if g is None else g for g, z in zip(grads, as_list)]
                                for grads in (ours_grad, expected_grad))
    error = abs(float(total) - offset - float(expected)) / abs(float(expected))
    grad_errors = [float((g - e).abs().max() / e.abs().max()) for g, e in zip(ours_grad, expected_grad)
                   if e.abs().max() > 0]
    print(f"{trainer_name} {settings}: loss rel. error {error:.2e}, gradient rel. errors "
          + ", ".join(f"{x:.2e}" for x in grad_errors))
    assert error <= 1e-4 and max(grad_errors) <= 1e-3
    peer, = [v for k, v in terms.items() if k != "main"]
    assert 0 < peer < 1  # the peer's term is not empty


IGNORE = 5
