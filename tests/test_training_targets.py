"""Auxiliary targets travel through nnU-Net's own augmentation pipeline as extra channels."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_aux.training.targets import AppendRegionChannelsTransform, TargetLayout


def label_patch(shape=(24, 32, 32), seed=0):
    """Blocks of every label value 0..4 (scales 1..3 of a vessel, tumour 4)."""
    rng = np.random.default_rng(seed)
    seg = np.zeros(shape, np.int16)
    for value in (1, 2, 3, 4, 1, 2, 3):
        z, y, x = (rng.integers(0, s - 6) for s in shape)
        seg[z:z + 6, y:y + 6, x:x + 6] = value
    return torch.from_numpy(seg)[None]


def augment(regions, ignore_label=None, seed=0, seg=None):
    torch.manual_seed(seed)
    np.random.seed(seed)
    ds_scales = [[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
    transforms = nnUNetTrainer.get_training_transforms(
        (24, 32, 32), (-np.pi, np.pi), ds_scales, (0, 1, 2), False, regions=regions, ignore_label=ignore_label)
    seg = label_patch() if seg is None else seg
    out = transforms(image=torch.randn(1, 24, 32, 32), segmentation=seg)
    return out["segmentation"]


def test_scale_channels_match_the_labels_after_augmentation():
    main = [(1, 2, 3), (4,)]
    aux = [(1,), (2,), (3,)]
    targets = augment(main + aux, seed=3)
    assert len(targets) == 3
    for level in targets:
        assert level.shape[0] == 5 and level.dtype == torch.bool
        vessel, tumour, s1, s2, s3 = level
        # the scales partition the vessel region at every resolution, after rotation/scaling/mirroring
        torch.testing.assert_close(vessel, s1 | s2 | s3)
        assert not (s1 & s2).any() and not (s2 & s3).any() and not (s1 & s3).any()
        assert not (tumour & vessel).any()
    assert all(targets[0][c].any() for c in range(5))


def test_auxiliary_channels_do_not_change_the_main_target():
    with_aux = augment([(1, 2, 3), (4,), (1,), (2,), (3,)], seed=5)
    stock = augment([(1, 2, 3), (4,)], seed=5)
    for a, b in zip(with_aux, stock):
        torch.testing.assert_close(a[:2], b)


def test_append_region_channels_keeps_the_label_map():
    seg = label_patch()
    out = AppendRegionChannelsTransform([(1,), (2, 3)])(segmentation=seg.clone())["segmentation"]
    assert out.shape[0] == 3
    torch.testing.assert_close(out[0], seg[0])
    torch.testing.assert_close(out[1].bool(), seg[0] == 1)
    torch.testing.assert_close(out[2].bool(), (seg[0] == 2) | (seg[0] == 3))
    pickle.dumps(AppendRegionChannelsTransform([(1,)]))  # augmentation workers pickle it


@pytest.mark.parametrize("has_regions", [True, False])
def test_target_layout_split(has_regions):
    b, shape = 2, (4, 4, 4)
    if has_regions:
        target = torch.zeros(b, 2 + 3 + 1, *shape, dtype=torch.bool)
        target[:, -1, 0] = True  # ignore slice 0
        target[:, 2, 1] = True  # scale 1
        layout = TargetLayout(n_main=2, n_aux=3, has_regions=True, ignore_label=5)
    else:
        target = torch.zeros(b, 1 + 3, *shape, dtype=torch.int16)
        target[:, 0, 0] = 5
        target[:, 1, 1] = 1
        layout = TargetLayout(n_main=1, n_aux=3, has_regions=False, ignore_label=5)
    main, aux, valid = layout.split(target)
    assert main.shape[1] == (3 if has_regions else 1)  # ignore channel kept last for nnU-Net's loss
    assert aux.shape[1] == 3 and aux.dtype == torch.bool and aux[:, 0, 1].all()
    assert valid.shape == (b, 1, *shape) and not valid[:, 0, 0].any() and valid[:, 0, 1:].all()
