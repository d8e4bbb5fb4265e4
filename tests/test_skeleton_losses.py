"""Skeleton Recall and soft-clDice losses against direct implementations: values, gradients, empty inputs."""

from __future__ import annotations

import pytest
import torch

from nnunet_aux.losses import (
    skeleton_recall_loss,
    soft_cldice,
    soft_cldice_loss,
    soft_dilate,
    soft_erode,
    soft_skeleton,
    soft_skeleton_recall,
)


# ------------------------------------------------------------------------------------ direct versions
def direct_recall_loss(p, s, valid=None, batch_dice=True, smooth=1e-5):
    """Kirchhoff et al.'s SoftSkeletonRecallLoss, written out with loops over samples and classes."""
    B, C = p.shape[:2]
    if valid is not None:
        s = s * valid
    if batch_dice:
        recalls = [((p[:, c] * s[:, c]).sum() + smooth) / (s[:, c].sum() + smooth) for c in range(C)]
    else:
        recalls = [((p[b, c] * s[b, c]).sum() + smooth) / (s[b, c].sum() + smooth) for b in range(B) for c in range(C)]
    return 1 - torch.stack(recalls).mean()


def neighbours(x, offsets, fill):
    """Every shifted copy of x (B, C, ...) for the spatial offsets, borders filled with ``fill``."""
    n = x.ndim - 2
    padded = torch.nn.functional.pad(x, [1, 1] * n, value=fill)
    size = x.shape[2:]
    return [padded[(slice(None), slice(None)) + tuple(slice(1 + o, 1 + o + d) for o, d in zip(off, size))]
            for off in offsets]


def direct_erode(x):
    n = x.ndim - 2
    cross = [tuple(0 if a != axis else o for a in range(n)) for axis in range(n) for o in (-1, 0, 1)]
    return torch.stack(neighbours(x, cross, float("inf")), 0).amin(0)


def direct_dilate(x):
    """Maximum over the 3^n cube, as the maximum over 3 neighbours along each axis in turn."""
    n = x.ndim - 2
    for axis in range(n):
        line = [tuple(o if a == axis else 0 for a in range(n)) for o in (-1, 0, 1)]
        x = torch.stack(neighbours(x, line, float("-inf")), 0).amax(0)
    return x


def direct_skeleton(x, k):
    """Shit et al.'s Alg. 1 with the direct morphology above."""
    relu = torch.relu
    skel = relu(x - direct_dilate(direct_erode(x)))
    for _ in range(k):
        x = direct_erode(x)
        delta = relu(x - direct_dilate(direct_erode(x)))
        skel = skel + relu(delta - skel * delta)
    return skel


def direct_cldice_loss(p, t, k=3, smooth=1.0):
    """Shit et al.'s soft-clDice per channel, sums over the batch, mean over channels."""
    out = []
    for c in range(p.shape[1]):
        pc, tc = p[:, c:c + 1], t[:, c:c + 1]
        sp, st = direct_skeleton(pc, k), direct_skeleton(tc, k)
        tprec = ((sp * tc).sum() + smooth) / (sp.sum() + smooth)
        tsens = ((st * pc).sum() + smooth) / (st.sum() + smooth)
        out.append(2 * tprec * tsens / (tprec + tsens))
    return 1 - torch.stack(out).mean()


def grad_of(fn, p):
    p = p.clone().requires_grad_(True)
    value = fn(p)
    value.backward()
    return value.detach(), p.grad


# ------------------------------------------------------------------------------------ skeleton recall
@pytest.mark.parametrize("batch_dice", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 6, 7), (2, 2, 4, 5, 6)])
def test_recall_matches_direct_values_and_gradients(shape, batch_dice):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(shape, generator=g)
    s = (torch.rand(shape, generator=g) > 0.7).float()
    valid = torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.2
    for v in (None, valid):
        ours, g_ours = grad_of(lambda x, v=v: skeleton_recall_loss(x, s, v, batch_dice), p)
        ref, g_ref = grad_of(lambda x, v=v: direct_recall_loss(x, s, None if v is None else v.float(), batch_dice),
                             p)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(g_ours, g_ref)
    # the gradient is exactly where the (valid) skeleton is: -1 / (C * |skeleton of the class|) with batch Dice
    if batch_dice:
        _, grad = grad_of(lambda x: skeleton_recall_loss(x, s, None, True), p)
        expected = -s / (shape[1] * (s.sum(dim=(0, *range(2, len(shape))), keepdim=True) + 1e-5))
        torch.testing.assert_close(grad, expected)


def test_recall_values_on_a_known_case():
    s = torch.zeros(1, 1, 4, 4)
    s[0, 0, 1] = 1  # a 4-voxel skeleton
    p = torch.zeros(1, 1, 4, 4)
    p[0, 0, 1, :2] = 1  # covers half of it
    assert soft_skeleton_recall(p, s, smooth=0).item() == pytest.approx(0.5)
    assert skeleton_recall_loss(p, s, smooth=0).item() == pytest.approx(0.5)
    assert skeleton_recall_loss(torch.ones_like(p), s).item() == pytest.approx(0.0, abs=1e-7)


def test_empty_skeleton_gives_zero_loss_and_zero_finite_gradient():
    p = torch.rand(2, 2, 5, 5, 5)
    s = torch.zeros_like(p)
    value, grad = grad_of(lambda x: skeleton_recall_loss(x, s, batch_dice=False), p)
    assert value.item() == 0 and torch.all(grad == 0)
    # one class empty, one not: the empty one contributes exactly 0 to the loss
    s[:, 1, 2, 2, 2] = 1
    recall = soft_skeleton_recall(p, s)
    assert recall[0].item() == 1 and torch.isfinite(recall).all()


def test_recall_half_precision_and_ignored_voxels():
    p = torch.rand(1, 1, 8, 8).half()
    s = torch.ones(1, 1, 8, 8).half()
    assert torch.isfinite(skeleton_recall_loss(p, s))
    valid = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    valid[..., :4] = True
    _, grad = grad_of(lambda x: skeleton_recall_loss(x, s.float(), valid), p.float())
    assert torch.all(grad[..., 4:] == 0) and torch.all(grad[..., :4] < 0)


# ------------------------------------------------------------------------------------ soft-clDice
@pytest.mark.parametrize("shape", [(1, 1, 9, 9), (2, 1, 6, 7, 8)])
def test_soft_morphology_matches_direct(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(soft_erode(x), direct_erode(x))
    torch.testing.assert_close(soft_dilate(x), direct_dilate(x))
    torch.testing.assert_close(soft_skeleton(x, 3), direct_skeleton(x, 3))


@pytest.mark.parametrize("shape", [(2, 2, 10, 11), (2, 2, 6, 7, 8)])
def test_cldice_matches_direct_values_and_gradients(shape):
    g = torch.Generator().manual_seed(2)
    p = torch.rand(shape, generator=g)
    t = (torch.rand(shape, generator=g) > 0.5).float()
    ours, g_ours = grad_of(lambda x: soft_cldice_loss(x, t, 3, 1.0), p)
    ref, g_ref = grad_of(lambda x: direct_cldice_loss(x, t, 3, 1.0), p)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    assert torch.isfinite(g_ours).all() and g_ours.abs().sum() > 0


def test_cldice_of_a_perfect_tube_is_one_and_of_a_broken_one_less():
    tube = torch.zeros(1, 1, 9, 9, 20)
    tube[..., 3:6, 3:6, :] = 1
    assert soft_cldice(tube, tube).item() == pytest.approx(1.0)
    broken = tube.clone()
    broken[..., 9:11] = 0
    assert soft_cldice_loss(broken, tube).item() > 0.02


def test_cldice_empty_inputs_and_ignored_voxels():
    empty = torch.zeros(2, 1, 6, 6, 6)
    value, grad = grad_of(lambda x: soft_cldice_loss(x, empty), empty)
    assert value.item() == 0 and torch.isfinite(grad).all()
    # prediction without target: penalised, finite
    assert 0 < soft_cldice_loss(torch.rand(2, 1, 6, 6, 6), empty).item() <= 1
    # ignored voxels get no gradient although the soft skeleton mixes neighbours
    p = torch.rand(1, 1, 8, 8, 8)
    t = (torch.rand(1, 1, 8, 8, 8) > 0.5).float()
    valid = torch.ones(1, 1, 8, 8, 8, dtype=torch.bool)
    valid[..., :3] = False
    _, grad = grad_of(lambda x: soft_cldice_loss(x, t, valid=valid), p)
    assert torch.all(grad[..., :3] == 0) and grad[..., 3:].abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(soft_cldice_loss(p.bfloat16(), t))


# ------------------------------------------------------------------------------------ the official formulas
def official_recall_loss(logits, skeleton_labels, batch_dice=True, smooth=1e-5, seg=None, ignore_label=None):
    """skeleton-recall 1.0.0's SoftSkeletonRecallLoss on nnU-Net's logits (B, K, ...) and the label-valued
    skeleton (B, 1, ...): softmax, drop the background, one-hot of the skeleton by scatter, ignore mask from
    the segmentation, sums over space (and batch), -mean recall."""
    x = torch.softmax(logits.float(), 1)[:, 1:]
    skel = skeleton_labels.long()
    mask = None
    if ignore_label is not None:
        mask = (seg != ignore_label).float()
        skel = torch.where(seg != ignore_label, skel, 0)
    onehot = torch.zeros(logits.shape, dtype=torch.float32).scatter_(1, skel, 1)[:, 1:]
    if mask is not None:
        onehot = onehot * mask
    dims = tuple(range(2, logits.ndim))
    inter, total = (x * onehot).sum(dims), onehot.sum(dims)
    if batch_dice:
        inter, total = inter.sum(0), total.sum(0)
    return -((inter + smooth) / torch.clip(total + smooth, 1e-8)).mean()


def pooled_skeleton(x, k):
    """Alg. 1 with the min/max pooling of the authors' soft_skeleton.py (erosion: the minimum of three 1D
    min-pools, dilation: a 3^n max-pool), fast enough for whole patches; equal to direct_skeleton (tested)."""
    n = x.ndim - 2
    pool = torch.nn.functional.max_pool3d if n == 3 else torch.nn.functional.max_pool2d

    def erode(y):
        outs = []
        for axis in range(n):
            kernel = tuple(3 if a == axis else 1 for a in range(n))
            outs.append(-pool(-y, kernel, 1, tuple(1 if a == axis else 0 for a in range(n))))
        return torch.stack(outs).amin(0)

    def opened(y):
        return pool(erode(y), 3, 1, 1)

    skel = torch.relu(x - opened(x))
    for _ in range(k):
        x = erode(x)
        delta = torch.relu(x - opened(x))
        skel = skel + torch.relu(delta - skel * delta)
    return skel


def test_pooled_skeleton_equals_the_direct_one():
    x = torch.rand(2, 2, 7, 8, 9, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(pooled_skeleton(x, 10), direct_skeleton(x, 10))
    torch.testing.assert_close(pooled_skeleton(x[..., 0], 4), direct_skeleton(x[..., 0], 4))


def official_cldice_loss(y_true, y_pred, exclude_background=False, smooth=1.0):
    """jocpae/clDice's current soft_cldice(exclude_background=...): 10-iteration soft skeletons, sums pooled over
    batch and channels, 1 - clDice."""
    if exclude_background:
        y_true, y_pred = y_true[:, 1:], y_pred[:, 1:]
    sp, st = pooled_skeleton(y_pred, 10), pooled_skeleton(y_true, 10)
    tprec = ((sp * y_true).sum() + smooth) / (sp.sum() + smooth)
    tsens = ((st * y_pred).sum() + smooth) / (st.sum() + smooth)
    return 1.0 - 2.0 * tprec * tsens / (tprec + tsens)


@pytest.mark.parametrize("batch_dice", [True, False])
def test_recall_equals_the_official_loss_on_logits_with_two_labels_and_an_ignore_label(batch_dice):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 6, 7, 8, generator=g)
    seg = torch.randint(0, 4, (2, 1, 6, 7, 8), generator=g)  # 3 plays the ignore label
    skel = torch.where(torch.rand(seg.shape, generator=g) > 0.5, seg, 0)  # label-valued skeleton
    valid = seg != 3
    onehot = torch.cat([skel == 1, skel == 2], 1).float()

    def ours(z):
        return skeleton_recall_loss(torch.softmax(z, 1)[:, 1:], onehot, valid, batch_dice)

    value, grad = grad_of(ours, logits)
    expected, expected_grad = grad_of(lambda z: official_recall_loss(z, skel, batch_dice, seg=seg, ignore_label=3),
                                      logits)
    # 1 - recall against -recall: the same gradient, a constant 1 apart
    torch.testing.assert_close(value - 1, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("exclude_background", [False, True])
def test_pooled_cldice_equals_the_official_loss(exclude_background):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 8, 9, 10, generator=g)
    labels = torch.randint(0, 3, (2, 8, 9, 10), generator=g)
    onehot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    start = 1 if exclude_background else 0

    def ours(z):
        return soft_cldice_loss(torch.softmax(z, 1)[:, start:], onehot[:, start:], 10, 1.0, pool_channels=True)

    value, grad = grad_of(ours, logits)
    expected, expected_grad = grad_of(
        lambda z: official_cldice_loss(onehot, torch.softmax(z, 1), exclude_background), logits)
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-8)
    # one clDice per channel (the package's per_structure) is another number
    per_channel = soft_cldice_loss(torch.softmax(logits, 1)[:, start:], onehot[:, start:], 10, 1.0)
    assert abs(float(per_channel) - float(value)) > 1e-4
