"""Losses of nnunet_aux.losses against loop-based transcriptions of the papers' equations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nnunet_aux.losses import (
    FocalLoss,
    ScaleContrastiveLoss,
    VoxelSimSiamLoss,
    binary_focal_loss,
    gather_voxels,
    sample_voxels,
    scale_contrastive_loss,
    simsiam_class_weights,
    voxel_simsiam_loss,
)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _autocast_dtypes() -> list:
    """Low-precision dtypes CPU autocast accepts in this torch build."""
    dtypes = []
    for dtype in (torch.bfloat16, torch.float16):
        try:
            with torch.autocast("cpu", dtype=dtype):
                torch.ones(2, 2) @ torch.ones(2, 2)
        except (RuntimeError, ValueError):  # pragma: no cover - depends on the build
            continue
        dtypes.append(dtype)
    return dtypes


# --------------------------------------------------------------------------------------
# Scale contrastive loss, Sadikine et al. Eq. 7-8
# --------------------------------------------------------------------------------------


def reference_contrastive(embeddings, classes, temperature):
    """Eq. 7-8 written out with loops, in the embeddings' dtype."""
    z = embeddings / embeddings.norm(dim=1, keepdim=True)
    n = len(classes)
    anchor_losses = []
    for i in range(n):
        positives = [j for j in range(n) if j != i and classes[j] == classes[i]]
        negatives = [k for k in range(n) if classes[k] != classes[i]]
        if not positives:
            continue  # no 1/|P_i|: not an anchor
        terms = []
        for j in positives:
            numerator = torch.exp(z[i] @ z[j] / temperature)
            denominator = numerator
            for k in negatives:
                denominator = denominator + torch.exp(z[i] @ z[k] / temperature)
            terms.append(-torch.log(numerator / denominator))
        anchor_losses.append(torch.stack(terms).mean())
    return torch.stack(anchor_losses).mean()


@pytest.mark.parametrize("temperature", [0.94, 0.3, 0.07])
def test_contrastive_matches_equation_values_and_gradients(temperature):
    torch.manual_seed(1)
    # Class 7 has a single anchor: it has no positive but is a negative for the others.
    classes = torch.tensor([1, 1, 1, 2, 2, 3, 3, 3, 3, 7])
    data = torch.randn(len(classes), 5, dtype=torch.float64)

    embeddings = data.clone().float().requires_grad_()
    loss = scale_contrastive_loss(embeddings, classes, temperature)
    loss.backward()

    reference_input = data.clone().requires_grad_()
    expected = reference_contrastive(reference_input, classes.tolist(), temperature)
    expected.backward()

    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(
        embeddings.grad.double(), reference_input.grad, rtol=1e-4, atol=1e-6
    )
    # The singleton anchor still receives gradient as a negative of the others.
    assert embeddings.grad[-1].abs().sum() > 0


def test_contrastive_known_value_and_scale_invariance():
    # Each anchor: one positive at cosine 1, two negatives at cosine -1.
    embeddings = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-3.0, 0.0], [-0.5, 0.0]])
    classes = torch.tensor([0, 0, 1, 1])
    tau = 0.5
    expected = math.log(1 + 2 * math.exp(-2 / tau))
    loss = scale_contrastive_loss(embeddings, classes, tau)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_contrastive_stable_at_tiny_temperature():
    torch.manual_seed(2)
    embeddings = torch.randn(20, 4, requires_grad=True)
    classes = torch.randint(0, 3, (20,))
    loss = scale_contrastive_loss(embeddings, classes, temperature=1e-3)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize(
    "classes",
    [
        torch.tensor([2, 2, 2, 2]),  # one class: no negatives
        torch.tensor([1, 2, 3, 4]),  # no positive pairs
        torch.tensor([5]),  # a single anchor
        torch.zeros(0, dtype=torch.long),  # empty draw
    ],
)
def test_contrastive_degenerate_batches_give_attached_zero(classes):
    embeddings = torch.randn(len(classes), 3, requires_grad=True)
    loss = scale_contrastive_loss(embeddings, classes)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))


def test_contrastive_zero_embedding_has_finite_gradient():
    embeddings = torch.randn(6, 3)
    embeddings[0] = 0
    embeddings.requires_grad_()
    loss = scale_contrastive_loss(embeddings, torch.tensor([1, 1, 1, 2, 2, 2]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all()


@pytest.mark.parametrize("dtype", _autocast_dtypes())
def test_contrastive_under_cpu_autocast_computes_in_float32(dtype):
    torch.manual_seed(3)
    classes = torch.randint(0, 3, (16,))
    low = torch.randn(16, 8).to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=dtype):
        loss = scale_contrastive_loss(low, classes, 0.1)
    loss.backward()
    expected = scale_contrastive_loss(low.detach().float(), classes, 0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert low.grad.dtype == dtype and torch.isfinite(low.grad.float()).all()


def test_contrastive_rejects_bad_input():
    with pytest.raises(ValueError, match="embeddings"):
        scale_contrastive_loss(torch.randn(4), torch.tensor([1, 1, 2, 2]))
    with pytest.raises(ValueError, match="classes"):
        scale_contrastive_loss(torch.randn(4, 2), torch.tensor([1, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        scale_contrastive_loss(torch.randn(4, 2), torch.tensor([1.0, 1, 2, 2]))
    with pytest.raises(ValueError, match="temperature"):
        scale_contrastive_loss(torch.randn(4, 2), torch.tensor([1, 1, 2, 2]), 0.0)


def test_contrastive_module_uses_every_voxel_when_budget_allows():
    torch.manual_seed(4)
    embeddings = torch.randn(2, 4, 2, 3, 4, requires_grad=True)
    labels = torch.randint(0, 4, (2, 2, 3, 4))
    criterion = ScaleContrastiveLoss(temperature=0.5, n_per_class=1000)
    loss = criterion(embeddings, labels, generator=_generator())
    loss.backward()

    # With room for every voxel the draw is the whole labelled set, and the loss does
    # not depend on the order of the anchors.
    vectors = embeddings.detach().permute(0, 2, 3, 4, 1).reshape(-1, 4)
    flat = labels.reshape(-1)
    expected = reference_contrastive(
        vectors[flat > 0].double(), flat[flat > 0].tolist(), 0.5
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Only labelled voxels get gradient.
    grad_norm = embeddings.grad.norm(dim=1)
    assert (grad_norm[labels == 0] == 0).all()
    assert (grad_norm[labels > 0] > 0).all()


def test_contrastive_module_single_sample_and_sampling():
    torch.manual_seed(5)
    embeddings = torch.randn(1, 6, 8, 8, 8, requires_grad=True)
    labels = torch.randint(0, 4, (1, 8, 8, 8))
    criterion = ScaleContrastiveLoss(n_per_class=16)
    loss = criterion(embeddings, labels, generator=_generator(7))

    indices, classes = sample_voxels(labels, 16, generator=_generator(7))
    assert torch.bincount(classes).tolist() == [0, 16, 16, 16]
    expected = scale_contrastive_loss(gather_voxels(embeddings, indices), classes)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert (embeddings.grad.norm(dim=1) > 0).sum() == 48


def test_contrastive_module_missing_scales_and_hard_mode():
    embeddings = torch.randn(2, 3, 4, 4, requires_grad=True)
    only_scale_two = torch.zeros(2, 4, 4, dtype=torch.long)
    only_scale_two[0, :2] = 2
    criterion = ScaleContrastiveLoss(n_per_class=4)
    loss = criterion(embeddings, only_scale_two)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(embeddings.grad, torch.zeros_like(embeddings))

    empty = criterion(embeddings, torch.zeros(2, 4, 4, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad

    hard = ScaleContrastiveLoss(n_per_class=4, sampling="hard")
    with pytest.raises(ValueError, match="hardness"):
        hard(embeddings, only_scale_two)
    labels = torch.randint(0, 3, (2, 4, 4))
    assert torch.isfinite(hard(embeddings, labels, hardness=torch.rand(2, 4, 4)))


def test_contrastive_module_rejects_mismatched_shapes():
    criterion = ScaleContrastiveLoss()
    with pytest.raises(ValueError, match="scale_labels"):
        criterion(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="sampling"):
        ScaleContrastiveLoss(sampling="best")
    with pytest.raises(ValueError, match="n_per_class"):
        ScaleContrastiveLoss(n_per_class=0)


# --------------------------------------------------------------------------------------
# Focal loss (CMU-Net, after Lin et al.)
# --------------------------------------------------------------------------------------


def reference_focal(logits, targets, alpha, gamma):
    """Element-wise focal loss by cases, in float64."""
    out = torch.zeros_like(logits)
    for index in range(logits.numel()):
        x, y = logits.reshape(-1)[index], targets.reshape(-1)[index]
        p = torch.sigmoid(x)
        if y == 1:
            value = -alpha * (1 - p) ** gamma * torch.log(p)
        else:
            value = -(1 - alpha) * p**gamma * torch.log(1 - p)
        out.reshape(-1)[index] = value
    return out


def test_focal_matches_definition_values_and_gradients():
    torch.manual_seed(6)
    data = torch.randn(4, 3, dtype=torch.float64) * 3
    targets = torch.randint(0, 2, (4, 3))

    logits = data.clone().float().requires_grad_()
    loss = binary_focal_loss(logits, targets, alpha=0.8, gamma=2.0)
    loss.backward()

    reference_input = data.clone().requires_grad_()
    expected = reference_focal(reference_input, targets, 0.8, 2.0).mean()
    expected.backward()

    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(logits.grad.double(), reference_input.grad, rtol=1e-4, atol=1e-7)


def test_focal_reductions_and_special_cases():
    torch.manual_seed(7)
    logits = torch.randn(3, 5)
    targets = torch.randint(0, 2, (3, 5)).float()
    elementwise = binary_focal_loss(logits, targets, reduction="none")
    assert elementwise.shape == (3, 5)
    assert binary_focal_loss(logits, targets, reduction="sum").item() == pytest.approx(
        elementwise.sum().item()
    )
    # gamma = 0 without alpha is binary cross-entropy.
    torch.testing.assert_close(
        binary_focal_loss(logits, targets, alpha=None, gamma=0.0),
        F.binary_cross_entropy_with_logits(logits, targets),
    )
    # alpha weighs positives, 1 - alpha negatives.
    ones = binary_focal_loss(torch.zeros(4), torch.ones(4), alpha=0.8, gamma=0.0)
    zeros = binary_focal_loss(torch.zeros(4), torch.zeros(4), alpha=0.8, gamma=0.0)
    assert ones.item() == pytest.approx(0.8 * math.log(2))
    assert zeros.item() == pytest.approx(0.2 * math.log(2))
    module = FocalLoss(alpha=0.25, gamma=1.5, reduction="sum")
    assert module(logits, targets).item() == pytest.approx(
        binary_focal_loss(logits, targets, 0.25, 1.5, "sum").item()
    )


def test_focal_extreme_logits_stay_finite():
    logits = torch.tensor([[-200.0, 200.0, -200.0, 200.0]], requires_grad=True)
    targets = torch.tensor([[1, 0, 0, 1]])
    loss = binary_focal_loss(logits, targets, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # Wrong with certainty costs alpha_t * |x|; right with certainty costs nothing.
    torch.testing.assert_close(
        loss, torch.tensor([[0.8 * 200, 0.2 * 200, 0.0, 0.0]]), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("dtype", _autocast_dtypes())
def test_focal_under_cpu_autocast(dtype):
    logits = (torch.randn(2, 4) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 2, (2, 4))
    with torch.autocast("cpu", dtype=dtype):
        loss = binary_focal_loss(logits, targets)
    loss.backward()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(
        binary_focal_loss(logits.detach().float(), targets).item(), rel=1e-6
    )
    assert torch.isfinite(logits.grad.float()).all()


def test_focal_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        binary_focal_loss(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="alpha"):
        binary_focal_loss(torch.zeros(2), torch.zeros(2), alpha=1.5)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="reduction"):
        FocalLoss(reduction="max")


# --------------------------------------------------------------------------------------
# Voxel-level SimSiam loss, Lee et al. Eq. 4-7
# --------------------------------------------------------------------------------------


def reference_simsiam(p, z, classes, include_self=True, pair_reduction="mean"):
    """Eq. 4-6 with explicit double loops over same-class pairs."""
    z = z.detach()
    classes = classes.tolist()
    present = sorted(set(classes))
    n = len(classes)
    inverse = {c: n / classes.count(c) for c in present}
    total = sum(inverse.values())
    loss = p.new_zeros(())
    for c in present:
        members = [i for i in range(n) if classes[i] == c]
        pair_sum, pairs = p.new_zeros(()), 0
        for i in members:
            for j in members:
                if i == j and not include_self:
                    continue
                pair_sum = pair_sum + F.cosine_similarity(p[i], z[j], dim=0)
                pairs += 1
        if pairs == 0:
            continue
        term = pair_sum / pairs if pair_reduction == "mean" else pair_sum
        loss = loss - inverse[c] / total * term
    return loss


def test_simsiam_class_weights_are_normalised_inverse_frequencies():
    present, weights = simsiam_class_weights(torch.tensor([3, 0, 0, 3, 3, 3, 5]))
    assert present.tolist() == [0, 3, 5]
    inverse = torch.tensor([7 / 2, 7 / 4, 7 / 1])
    torch.testing.assert_close(weights, inverse / inverse.sum())


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("pair_reduction", ["mean", "sum"])
def test_simsiam_matches_equation_values_and_gradients(include_self, pair_reduction):
    torch.manual_seed(8)
    classes = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 4])  # class 4: one voxel
    p_data = torch.randn(len(classes), 6, dtype=torch.float64)
    z_data = torch.randn(len(classes), 6, dtype=torch.float64)

    p = p_data.clone().float().requires_grad_()
    loss = voxel_simsiam_loss(p, z_data.float(), classes, include_self, pair_reduction)
    loss.backward()

    p_reference = p_data.clone().requires_grad_()
    expected = reference_simsiam(p_reference, z_data, classes, include_self, pair_reduction)
    expected.backward()

    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(p.grad.double(), p_reference.grad, rtol=1e-4, atol=1e-6)


def test_simsiam_stop_gradient():
    torch.manual_seed(9)
    classes = torch.tensor([1, 1, 2, 2, 2])
    # Projections as a leaf: the loss must not send them any gradient.
    z = torch.randn(5, 4, requires_grad=True)
    p = torch.randn(5, 4, requires_grad=True)
    voxel_simsiam_loss(p, z, classes).backward()
    assert z.grad is None
    assert p.grad is not None and p.grad.abs().sum() > 0

    # With p = pred(z), z learns only through the prediction head, exactly as if its
    # own term were a constant copy.
    predictor = torch.nn.Linear(4, 4)
    z_leaf = z.detach().clone().requires_grad_()
    voxel_simsiam_loss(predictor(z_leaf), z_leaf, classes).backward()
    z_const = z.detach().clone().requires_grad_()
    voxel_simsiam_loss(predictor(z_const), z.detach().clone(), classes).backward()
    torch.testing.assert_close(z_leaf.grad, z_const.grad)


def test_simsiam_degenerate_inputs():
    p = torch.randn(0, 4, requires_grad=True)
    loss = voxel_simsiam_loss(p, torch.randn(0, 4), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad

    # One class only, one voxel: the self pair is the only pair.
    p1 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z1 = torch.tensor([[0.0, 1.0]])
    assert voxel_simsiam_loss(p1, z1, torch.tensor([3])).item() == pytest.approx(0.0)
    without_self = voxel_simsiam_loss(p1, z1, torch.tensor([3]), include_self=False)
    assert without_self.item() == 0.0 and without_self.requires_grad
    without_self.backward()
    assert torch.equal(p1.grad, torch.zeros_like(p1))


@pytest.mark.parametrize("dtype", _autocast_dtypes())
def test_simsiam_under_cpu_autocast(dtype):
    torch.manual_seed(10)
    classes = torch.randint(0, 3, (12,))
    p = torch.randn(12, 8).to(dtype).requires_grad_()
    z = torch.randn(12, 8).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        loss = voxel_simsiam_loss(p, z, classes)
    loss.backward()
    assert loss.dtype == torch.float32
    expected = voxel_simsiam_loss(p.detach().float(), z.float(), classes)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.isfinite(p.grad.float()).all()


def test_simsiam_module_sums_weighted_layers():
    torch.manual_seed(11)
    shapes = [(2, 5, 4, 4, 4), (2, 7, 2, 2, 2)]
    predictions = [torch.randn(*s, requires_grad=True) for s in shapes]
    projections = [torch.randn(*s) for s in shapes]
    labels = [torch.randint(0, 3, (s[0],) + s[2:]) for s in shapes]
    criterion = VoxelSimSiamLoss(layer_weights=(1.0, 0.5), max_total=10_000)
    loss = criterion(predictions, projections, labels, generator=_generator())

    # The budget covers every foreground voxel and the loss ignores their order.
    expected = 0.0
    for weight, p, z, y in zip((1.0, 0.5), predictions, projections, labels):
        vectors_p = p.detach().movedim(1, -1).reshape(-1, p.shape[1])
        vectors_z = z.movedim(1, -1).reshape(-1, z.shape[1])
        flat = y.reshape(-1)
        expected += weight * reference_simsiam(
            vectors_p[flat > 0].double(), vectors_z[flat > 0].double(), flat[flat > 0]
        ).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    for p, y in zip(predictions, labels):
        grad_norm = p.grad.norm(dim=1)
        assert (grad_norm[y == 0] == 0).all() and (grad_norm[y > 0] > 0).all()


def test_simsiam_module_single_sample_background_and_errors():
    torch.manual_seed(12)
    p = torch.randn(1, 4, 3, 3, 3, requires_grad=True)
    z = torch.randn(1, 4, 3, 3, 3)
    background_only = torch.zeros(1, 3, 3, 3, dtype=torch.long)

    criterion = VoxelSimSiamLoss(max_total=8, max_false_negative=4)
    loss = criterion(p, z, background_only)  # a single tensor is one layer
    assert loss.item() == 0.0 and loss.requires_grad
    # Background voxels are drawn when asked; with p = z they align perfectly.
    with_background = VoxelSimSiamLoss(max_total=8, include_background=True)
    constant = torch.ones(1, 4, 3, 3, 3)
    aligned = with_background(constant, constant, background_only, generator=_generator())
    assert aligned.item() == pytest.approx(-1.0)

    pred = torch.zeros(1, 3, 3, 3, dtype=torch.long)
    labels = torch.randint(0, 3, (1, 3, 3, 3))
    assert torch.isfinite(criterion([p], [z], [labels], [pred], generator=_generator()))

    with pytest.raises(ValueError, match="one entry per layer"):
        criterion([p, p], [z], [labels, labels])
    with pytest.raises(ValueError, match="layer_weights"):
        VoxelSimSiamLoss(layer_weights=(1.0, 1.0))(p, z, labels)
    with pytest.raises(ValueError, match="layer 0"):
        criterion(p, z, labels[:, :2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_on_cuda_with_cpu_generator_and_fp16_autocast():
    device = torch.device("cuda")
    torch.manual_seed(13)
    embeddings = torch.randn(1, 8, 6, 6, 6, device=device, requires_grad=True)
    labels = torch.randint(0, 4, (1, 6, 6, 6), device=device)
    identity = torch.eye(8, device=device)[..., None, None, None]
    with torch.autocast("cuda", dtype=torch.float16):
        features = F.conv3d(embeddings, identity)  # float16 under autocast
        contrastive = ScaleContrastiveLoss(n_per_class=16)(
            features, labels, generator=_generator()
        )
        simsiam = VoxelSimSiamLoss(max_total=40)(
            features, features, labels, generator=_generator()
        )
        focal = binary_focal_loss(features.mean((2, 3, 4)), torch.ones(1, 8, device=device))
    total = contrastive + simsiam + focal
    assert total.dtype == torch.float32 and torch.isfinite(total)
    total.backward()
    assert torch.isfinite(embeddings.grad).all()
    # The draw depends on the generator only, not on the device of the labels.
    on_gpu = sample_voxels(labels, 5, generator=_generator(2))[0].cpu()
    on_cpu = sample_voxels(labels.cpu(), 5, generator=_generator(2))[0]
    assert torch.equal(on_gpu, on_cpu)


@pytest.mark.parametrize("include_self, pair_reduction", [(True, "mean"), (False, "mean"), (True, "sum")])
def test_simsiam_module_equals_per_layer_losses_on_its_draws(include_self, pair_reduction):
    """The module's one-pass loss over all layers is the weighted sum of voxel_simsiam_loss per layer."""
    from nnunet_aux.losses.sampling import sample_simsiam_voxels_layers

    torch.manual_seed(14)
    shapes = [(2, 6, 6, 6, 6), (2, 6, 3, 3, 3), (2, 4, 2, 2, 2)]  # the last layer narrower: zero-padded
    predictions = [torch.randn(*s, requires_grad=True) for s in shapes]
    projections = [torch.randn(*s) for s in shapes]
    labels = [torch.randint(0, 4, (s[0],) + s[2:]) for s in shapes]
    pred = [torch.where(torch.rand(y.shape) < 0.4, 0, y) for y in labels]
    labels[2][1] = -1  # an ignored sample
    weights = (1.0, 0.5, 2.0)
    criterion = VoxelSimSiamLoss(layer_weights=weights, max_total=60, max_false_negative=25,
                                 include_self=include_self, pair_reduction=pair_reduction)
    loss = criterion(predictions, projections, labels, pred, generator=_generator(5))
    loss.backward()

    draws = sample_simsiam_voxels_layers(labels, pred, max_total=60, max_false_negative=25, generator=_generator(5))
    reference = [p.detach().clone().requires_grad_() for p in predictions]
    expected = sum(w * voxel_simsiam_loss(gather_voxels(p, i), gather_voxels(z, i), c, include_self, pair_reduction)
                   for w, p, z, (i, c) in zip(weights, reference, projections, draws))
    expected.backward()
    sizes = [i.numel() for i, _ in draws]
    assert sizes[0] == 60 and 0 < sizes[2] < sizes[1] < 60  # a full draw and two partial ones
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    for p, ref in zip(predictions, reference):
        torch.testing.assert_close(p.grad, ref.grad, rtol=1e-5, atol=1e-7)
