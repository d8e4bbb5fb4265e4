"""CLEF's losses, its affine T and its head against loop-based transcriptions of the paper."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnunet_aux.heads import CLEFHead, EncoderSpec, decoder_features
from nnunet_aux.losses import (
    CLEFDiscriminativeLoss,
    CLEFEquivarianceLoss,
    RandomPlaneAffine,
    affine_matrix,
    affine_sampling_grid,
    affine_warp,
    decoding_loss,
    discriminative_loss,
    discriminative_loss_at,
    draw_voxels,
    equivariance_loss,
    valid_sampling_mask,
)
from nnunet_aux.losses.clef import physical_distances


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unravel(index: int, shape):
    out = []
    for size in reversed(shape):
        out.append(index % size)
        index //= size
    return out[::-1]


# ------------------------------------------------------------------------------ decoding
def test_decoding_loss_is_the_mean_squared_error_over_voxels_and_channels():
    decoded, image = torch.randn(2, 2, 3, 4, generator=_generator()), torch.randn(2, 2, 3, 4, generator=_generator(1))
    expected = sum((decoded[idx] - image[idx]) ** 2 for idx in itertools.product(*map(range, image.shape)))
    expected /= image.numel()
    torch.testing.assert_close(decoding_loss(decoded, image), expected)
    with pytest.raises(ValueError, match="shape"):
        decoding_loss(decoded, image[:, :1])


# ----------------------------------------------------------------------- discriminativeness
def reference_discriminative(features, anchors, leaves, spacing, margin, min_distance, reduction):
    """Eq. 1 with loops: per image, sum over anchors and far leaves of relu(M - D), D = -<f_a, f_l>."""
    shape = features.shape[2:]
    per_image, total, n_far = [], 0.0, 0
    for b in range(features.shape[0]):
        flat = features[b].flatten(1)
        s = 0.0
        for a in anchors[b].tolist():
            for leaf in leaves[b].tolist():
                pa, pl = _unravel(a, shape), _unravel(leaf, shape)
                distance = math.sqrt(sum(((i - j) * h) ** 2 for i, j, h in zip(pa, pl, spacing)))
                if distance < min_distance:
                    continue
                fa, fl = flat[:, a] / flat[:, a].norm(), flat[:, leaf] / flat[:, leaf].norm()
                d = -(fa * fl).sum()
                s = s + torch.relu(margin - d)
                n_far += 1
        per_image.append(s)
        total = total + s
    if reduction == "sum":
        return sum(per_image) / len(per_image)
    return total / n_far


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("margin", [-0.9, 0.0])
def test_discriminative_loss_matches_eq1_with_anisotropic_spacing(reduction, margin):
    spacing = (4.0, 1.5, 1.0)  # 10 mm: 3 slices, 7 rows or 10 columns
    shape = (4, 6, 11)
    g = _generator(2)
    # features of a few directions only, so that many pairs are alike and the hinge is active
    base = torch.randn(3, 5, generator=g)
    features = base[torch.randint(3, (2, *shape), generator=g)].movedim(-1, 1) + 0.05 * torch.randn(
        2, 5, *shape, generator=g)
    n = math.prod(shape)
    anchors = torch.stack([torch.randperm(n, generator=g)[:6] for _ in range(2)])
    leaves = torch.stack([torch.randperm(n, generator=g)[:40] for _ in range(2)])
    expected = reference_discriminative(features.double(), anchors, leaves, spacing, margin, 10.0, reduction)
    got = discriminative_loss_at(features, anchors, leaves, spacing, margin, 10.0, reduction)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), torch.as_tensor(expected, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert got > 0


def test_pairs_are_selected_by_physical_distance():
    """Equal features: every far pair costs relu(-0.9 + 1) = 0.1, so the loss counts far pairs."""
    spacing = (5.0, 1.0)  # anisotropic: 2 rows apart = 10 mm, 9 columns = 9 mm
    shape = (4, 12)
    features = torch.ones(1, 3, *shape)
    anchors = torch.tensor([[0, 13]])
    leaves = torch.arange(math.prod(shape))[None]
    far = 0
    for a in anchors[0].tolist():
        for leaf in leaves[0].tolist():
            (ya, xa), (yl, xl) = _unravel(a, shape), _unravel(leaf, shape)
            far += math.hypot(5 * (ya - yl), xa - xl) >= 10
    got = discriminative_loss_at(features, anchors, leaves, spacing)
    torch.testing.assert_close(got, torch.tensor(0.1 * far), rtol=1e-5, atol=1e-5)
    # exactly 10 mm counts (">= 10 mm"): voxel 0 and row 2, column 0
    assert physical_distances(torch.tensor([0]), torch.tensor([24]), shape, spacing).item() == 10.0
    one = discriminative_loss_at(features, torch.tensor([[0]]), torch.tensor([[24]]), spacing)
    torch.testing.assert_close(one, torch.tensor(0.1), rtol=1e-5, atol=1e-6)
    # and isotropic 1 mm voxels would make it 2 mm: not compared
    assert discriminative_loss_at(features, torch.tensor([[0]]), torch.tensor([[24]]), (1.0, 1.0)) == 0


def test_physical_distances_match_a_loop():
    shape, spacing = (3, 4, 5), (2.5, 0.7, 1.3)
    a, b = torch.tensor([[0, 17, 59]]), torch.tensor([[3, 44, 21, 58]])
    got = physical_distances(a, b, shape, spacing)
    for i, j in itertools.product(range(3), range(4)):
        pa, pb = _unravel(int(a[0, i]), shape), _unravel(int(b[0, j]), shape)
        expected = math.sqrt(sum(((x - y) * h) ** 2 for x, y, h in zip(pa, pb, spacing)))
        assert got[0, i, j].item() == pytest.approx(expected, rel=1e-6)


def test_no_far_pair_gives_an_attached_zero():
    features = torch.randn(1, 4, 3, 3, requires_grad=True)
    loss = discriminative_loss(features, (1.0, 1.0), 4, 9)  # the patch is 2.8 mm across
    assert loss.item() == 0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(features.grad) == 0


def test_discriminative_gradients_match_the_loop_and_gradcheck():
    spacing, shape = (3.0, 2.0, 2.0), (4, 5, 6)
    g = _generator(5)
    features = (torch.randn(1, 4, *shape, generator=g, dtype=torch.float64) + 2).requires_grad_(True)
    anchors, leaves = torch.tensor([[0, 33, 97]]), torch.tensor([[5, 60, 119, 80, 2, 41]])
    loss = discriminative_loss_at(features, anchors, leaves, spacing, -0.9, 10.0)
    (grad,) = torch.autograd.grad(loss, features)
    expected = reference_discriminative(features, anchors, leaves, spacing, -0.9, 10.0, "sum")
    (expected_grad,) = torch.autograd.grad(expected, features)
    assert loss.item() > 0
    torch.testing.assert_close(grad, expected_grad)
    assert torch.autograd.gradcheck(
        lambda f: discriminative_loss_at(f, anchors, leaves, spacing, -0.9, 10.0, "mean"), (features,))


def test_random_draw_stays_within_the_patch_and_is_reproducible():
    features = torch.randn(2, 8, 4, 6, 6)
    loss = CLEFDiscriminativeLoss((4.0, 4.0, 4.0), n_anchors=500, n_leaves=5000)  # more than the 144 voxels
    assert loss(features, _generator(1)) == loss(features, _generator(1))
    with pytest.raises(ValueError, match="reduction"):
        CLEFDiscriminativeLoss((1.0, 1.0), reduction="max")
    with pytest.raises(ValueError, match="margin"):
        CLEFDiscriminativeLoss((1.0, 1.0), margin=-2)


def test_voxel_draws_are_uniform_and_repeat_only_on_large_patches():
    small = draw_voxels(3, 500, 100, _generator(0))
    assert small.shape == (3, 100) and all(len(set(row.tolist())) == 100 for row in small)
    assert draw_voxels(1, 50, 1024, _generator(0)).shape == (1, 50)  # at most every voxel once
    large = draw_voxels(2, 128 ** 3, 1024, _generator(0))  # with replacement: no permutation of 2M voxels
    assert large.shape == (2, 1024) and int(large.min()) >= 0 and int(large.max()) < 128 ** 3
    assert len(set(large[0].tolist())) >= 1000


# ------------------------------------------------------------------------------ affine T
def reference_warp_3d(x, shape, spacing, angle_deg, plane, scale, shift, voxel):
    """T(x) at one output voxel: physical coordinates, rotation / scale / shift, trilinear, zeros outside."""
    half = [n * h / 2 for n, h in zip(shape, spacing)]
    p_out = [(k + 0.5) * h - e for k, h, e in zip(voxel, spacing, half)]  # mm from the patch centre
    a, b = plane
    t = math.radians(angle_deg)
    p_in = list(p_out)
    p_in[a] = (math.cos(t) * p_out[a] - math.sin(t) * p_out[b]) / scale + shift[0] * half[a]
    p_in[b] = (math.sin(t) * p_out[a] + math.cos(t) * p_out[b]) / scale + shift[1] * half[b]
    index = [(p + e) / h - 0.5 for p, e, h in zip(p_in, half, spacing)]  # continuous voxel index
    lower = [math.floor(i) for i in index]
    value = torch.zeros(x.shape[0], dtype=x.dtype)
    for corner in itertools.product((0, 1), repeat=3):
        k = [lo + c for lo, c in zip(lower, corner)]
        w = math.prod((i - lo) if c else (1 - (i - lo)) for i, lo, c in zip(index, lower, corner))
        if all(0 <= kk < n for kk, n in zip(k, shape)):
            value = value + w * x[:, k[0], k[1], k[2]]
    return value, index


@pytest.mark.parametrize("plane", [(0, 1), (0, 2), (1, 2)])
def test_warp_is_a_physical_rotation_scale_and_shift(plane):
    shape, spacing = (6, 8, 10), (3.0, 1.25, 0.8)
    x = torch.randn(2, *shape, generator=_generator(7), dtype=torch.float64)
    angle, scale, shift = 23.0, 1.3, (0.07, -0.04)
    theta = affine_matrix(shape, spacing, angle, plane, scale, shift)
    grid = affine_sampling_grid(theta[None], shape)
    out = affine_warp(x[None], grid)[0]
    valid = valid_sampling_mask(grid)[0]
    for voxel in [(0, 0, 0), (2, 3, 4), (5, 7, 9), (3, 1, 8), (1, 6, 2)]:
        expected, index = reference_warp_3d(x, shape, spacing, angle, plane, scale, shift, voxel)
        torch.testing.assert_close(out[(slice(None), *voxel)], expected, rtol=1e-4, atol=1e-4)
        assert bool(valid[voxel]) == all(-1e-4 <= i <= n - 1 + 1e-4 for i, n in zip(index, shape))


def test_a_quarter_turn_of_a_square_patch_moves_voxels_exactly():
    x = torch.arange(25.0).view(1, 1, 5, 5)
    grid = affine_sampling_grid(affine_matrix((5, 5), (0.7, 0.7), angle_deg=90)[None], (5, 5))
    out = affine_warp(x, grid)
    assert torch.allclose(out, torch.rot90(x, 1, (2, 3)), atol=1e-5) or \
        torch.allclose(out, torch.rot90(x, -1, (2, 3)), atol=1e-5)
    assert bool(valid_sampling_mask(grid).all())


def test_magnification_keeps_every_sample_inside_and_rotation_cuts_corners():
    shape, spacing = (8, 8, 8), (1.0, 1.0, 1.0)
    zoom = affine_sampling_grid(affine_matrix(shape, spacing, scale=1.5, plane=(1, 2))[None], shape)
    assert bool(valid_sampling_mask(zoom).all())
    turn = affine_sampling_grid(affine_matrix(shape, spacing, angle_deg=30, plane=(1, 2))[None], shape)
    valid = valid_sampling_mask(turn)[0]
    assert not bool(valid[:, 0, 0].any()) and bool(valid[:, 4, 4].all())


def _physical_linear(theta, shape, spacing):
    """theta's linear part in array order and physical units: H L H^-1."""
    ndim = len(shape)
    linear = theta[:, :ndim].flip(0).flip(1).double()
    half = torch.tensor([n * h / 2 for n, h in zip(shape, spacing)], dtype=torch.float64)
    return linear * half[:, None] / half[None, :], theta[:, ndim].flip(0).double()


@pytest.mark.parametrize("shape, spacing", [((8, 12, 16), (3.0, 1.0, 0.8)), ((12, 20), (1.0, 0.6))])
def test_random_transform_follows_the_paper(shape, spacing):
    """One random plane; rotation within 30 degrees, magnification 1 to 1.5, shifts within 0.1, in that plane."""
    t = RandomPlaneAffine(spacing)
    transforms = t.sample(200, shape, _generator(3))
    assert transforms.theta.shape == (200, len(shape), len(shape) + 1)
    planes = set()
    for theta, plane in zip(transforms.theta, transforms.planes):
        linear, shift = _physical_linear(theta, shape, spacing)
        moved = [i for i in range(len(shape)) if not torch.allclose(linear[i], torch.eye(len(shape))[i].double(),
                                                                       atol=1e-6)]
        assert plane == (tuple(moved) if len(moved) == 2 else (0, 1))
        planes.add(plane)
        block = linear[list(plane)][:, list(plane)]
        scale = 1 / math.sqrt(torch.det(block).item())
        angle = math.degrees(math.atan2(block[1, 0].item(), block[0, 0].item()))
        assert 1 - 1e-5 <= scale <= 1.5 + 1e-5 and abs(angle) <= 30 + 1e-4
        torch.testing.assert_close(block * scale, torch.tensor(
            [[math.cos(math.radians(angle)), -math.sin(math.radians(angle))],
             [math.sin(math.radians(angle)), math.cos(math.radians(angle))]], dtype=torch.float64), atol=1e-5,
            rtol=0)
        assert all(abs(shift[i]) <= 0.1 + 1e-6 for i in plane)
        assert all(shift[i] == 0 for i in range(len(shape)) if i not in plane)
    assert planes == ({(0, 1), (0, 2), (1, 2)} if len(shape) == 3 else {(0, 1)})
    with pytest.raises(ValueError, match="spacing"):
        t.sample(1, (8, 8) if len(shape) == 3 else (8, 8, 8))


@pytest.mark.parametrize("shape, spacing", [((5, 7, 9), (2.0, 1.0, 0.8)), ((12, 10), (1.0, 0.7))])
def test_slice_wise_warp_is_the_warp_on_the_full_grid(shape, spacing):
    """One 2D grid per image for every slice across the untouched axis = the full grid's trilinear warp."""
    transforms = RandomPlaneAffine(spacing).sample(30, shape, _generator(1))
    x = torch.randn(30, 3, *shape, generator=_generator(2), dtype=torch.float64)
    grid = transforms.grid(shape)
    torch.testing.assert_close(transforms.warp(x), affine_warp(x, grid), rtol=1e-6, atol=1e-6)
    assert torch.equal(transforms.valid(shape), valid_sampling_mask(grid))
    assert transforms.warp(x.float()).dtype == torch.float32
    with pytest.raises(ValueError, match="batch"):
        transforms.warp(x[:2])


# --------------------------------------------------------------------------- equivariance
def reference_equivariance(a, b, valid, normalize=False):
    """-<a, b>: mean over valid voxels of the inner product (or cosine) of the two feature vectors, with loops."""
    total, n = 0.0, 0
    for bi in range(a.shape[0]):
        for voxel in itertools.product(*map(range, a.shape[2:])):
            if not valid[(bi, *voxel)]:
                continue
            u, v = a[(bi, slice(None), *voxel)], b[(bi, slice(None), *voxel)]
            total = total + (u @ v) / ((u.norm() * v.norm()) if normalize else 1)
            n += 1
    return -total / n


@pytest.mark.parametrize("normalize", [False, True])
def test_equivariance_loss_matches_eq2_and_its_gradients(normalize):
    g = _generator(11)
    a = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    valid = torch.rand(2, 4, 5, generator=g) > 0.3
    got = equivariance_loss(a, b, valid, normalize)
    expected = reference_equivariance(a, b, valid, normalize)
    torch.testing.assert_close(got, expected)
    grads = torch.autograd.grad(got, (a, b))
    expected_grads = torch.autograd.grad(expected, (a, b))
    for x, y in zip(grads, expected_grads):
        torch.testing.assert_close(x, y)
    assert torch.autograd.gradcheck(lambda x, y: equivariance_loss(x, y, valid, normalize), (a, b))
    all_voxels = torch.ones(2, 4, 5, dtype=torch.bool)
    torch.testing.assert_close(equivariance_loss(a, b), reference_equivariance(a, b, all_voxels, normalize=False))


@pytest.mark.parametrize("shape, spacing", [((6, 10, 12), (2.5, 1.0, 0.9)), ((16, 20), (0.8, 1.1))])
def test_an_exactly_equivariant_network_reaches_the_minimum(shape, spacing):
    """f = identity: T(f(X)) = f(T(X)), so L_e = -mean ||f(T(X))||^2 over the valid voxels; -1 for the cosine."""
    x = torch.randn(3, 4, *shape, generator=_generator(4))
    transform = RandomPlaneAffine(spacing)(x, _generator(9))
    warped = transform.warp(x)
    valid = transform.valid(shape)
    loss = CLEFEquivarianceLoss()(x, warped, transform)  # features of X, features of T(X), T
    expected = -(warped.pow(2).sum(1) * valid).sum() / valid.sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(CLEFEquivarianceLoss(normalize=True)(x, warped, transform), torch.tensor(-1.0))
    # the same with the full grid
    torch.testing.assert_close(CLEFEquivarianceLoss()(x, warped, transform.grid(shape)), expected)
    assert valid.float().mean() > 0.5
    # unit features that ignore T are not equivariant
    unit = F.normalize(x, dim=1)
    assert CLEFEquivarianceLoss()(unit, unit, transform) > -0.5


def test_no_valid_voxel_gives_an_attached_zero():
    a = torch.randn(1, 2, 3, 3, requires_grad=True)
    loss = equivariance_loss(a, a.detach() + 1, torch.zeros(1, 3, 3, dtype=torch.bool))
    assert loss.item() == 0 and loss.requires_grad


def test_losses_compute_in_float32_under_autocast():
    x = torch.randn(2, 8, 6, 8, 8)
    transform = RandomPlaneAffine((1.0, 1.0, 1.0))(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = x.to(torch.bfloat16)
        values = [decoding_loss(low[:, :1], x[:, :1]), discriminative_loss(low, (3.0, 3.0, 3.0), 4, 64),
                  CLEFEquivarianceLoss()(low, transform.warp(low).to(torch.bfloat16), transform)]
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in values)


# ------------------------------------------------------------------------------- the head
def _spec(ndim):
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if ndim == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return EncoderSpec([8, 16], [[1] * ndim, [2] * ndim], [[3] * ndim] * 2, conv, True, norm, {"affine": True},
                       None, None, nn.LeakyReLU, {"inplace": True})


@pytest.mark.parametrize("ndim", [2, 3])
def test_head_gives_unit_features_and_an_image(ndim):
    head = CLEFHead(_spec(ndim), in_channels=8, image_channels=2, feature_dim=5)
    f, decoded = head(torch.randn(2, 8, *([6] * ndim)))
    assert f.shape == (2, 5, *([6] * ndim)) and decoded.shape == (2, 2, *([6] * ndim))
    torch.testing.assert_close(f.norm(dim=1), torch.ones(2, *([6] * ndim)))
    convs = [m for m in head.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    assert len(convs) == 4 and all(c.kernel_size == (1,) * ndim for c in convs)
    assert not any(isinstance(m, (nn.InstanceNorm2d, nn.InstanceNorm3d)) for m in head.modules())


@pytest.mark.parametrize("network, ndim", [("plain", 2), ("plain", 3), ("resenc", 3)])
def test_decoder_features_are_what_the_last_segmentation_layer_sees(network, ndim):
    from test_heads import plain_unet, resenc_unet

    net = (plain_unet(ndim) if network == "plain" else resenc_unet()).eval()
    x = torch.randn(1, 1, *([16] * ndim))
    with torch.no_grad():
        features = decoder_features(net, x)
        assert features.shape == (1, 4, *([16] * ndim))
        torch.testing.assert_close(net.decoder.seg_layers[-1](features), net(x)[0])
