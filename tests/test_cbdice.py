"""cbDice against an independent re-derivation of the authors' loss (PengchengShi1220/cbDice, loss/cbdice_loss.py).

The reference here is written from their code's description, per sample and with scipy's distance
transform (the package uses MONAI's): binarised foreground probability softmax([z_0, max_k z_k]),
hard prediction p > 0.5, 10-iteration soft skeletons of the hard prediction and the target (no
gradient), radius maps normalised per sample by max(max radius, 1), the linear inverse radius
weight (squared in 3D), combine_tensors, smoothing 1e-3, loss -cbDice. The package's loss is
1 - cbDice: the same gradient, the value 1 higher per unit of weight.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from test_skeleton_losses import grad_of, pooled_skeleton

from nnunet_aux.losses import cbdice_loss, cbdice_radius_weights, distance_transform, soft_cbdice
from nnunet_aux.training.task import AuxBatch
from nnunet_aux.training.tasks import CbDiceTask, foreground_probability


# ------------------------------------------------------------------------------------ the reference
def reference_radius_maps(mask: np.ndarray, skel: np.ndarray, dim: int):
    """get_weights' D, S, I for one sample (numpy, binary inputs)."""
    d = ndimage.distance_transform_edt(mask) * mask
    r = d * skel
    big, small = max(r.max(), 1.0), max(r.min(), 1.0)
    inverse = ((big - r + small) / big) ** (1 if dim == 2 else 2) * skel
    return np.minimum(d, big) / big, r / big, inverse


def reference_cbdice(prob: torch.Tensor, target: torch.Tensor, iterations=10, smooth=1e-3) -> torch.Tensor:
    """-cbDice of SoftcbDiceLoss for a foreground probability map (B, ...) and a binary target (B, ...)."""
    dim = prob.ndim - 1
    with torch.no_grad():
        y = (target > 0).float()
        hard = (prob > 0.5).float()
        skel_hard = pooled_skeleton(hard[:, None], iterations)[:, 0]
        skel_true = pooled_skeleton(y[:, None], iterations)[:, 0]
    skel_prob = skel_hard * prob
    maps = {"true": [], "pred": []}
    for b in range(prob.shape[0]):
        maps["true"].append(reference_radius_maps(y[b].numpy(), skel_true[b].numpy(), dim))
        maps["pred"].append(reference_radius_maps(hard[b].numpy(), (skel_prob[b] > 0.5).float().detach().numpy(),
                                                  dim))

    def stack(which, k):
        return torch.from_numpy(np.stack([m[k] for m in maps[which]])).float()

    q_vl, q_slvl, q_sl = stack("true", 0) * y, stack("true", 1) * y, stack("true", 2) * skel_true
    q_vp, q_spvp, q_sp = stack("pred", 0) * prob, stack("pred", 1) * prob, stack("pred", 2) * skel_prob

    def combine(a, b, c):
        out = (b * c).clone()
        where = (a != 0) & (b == 0)
        out[where] = (a * c)[where]
        return out

    prec = (torch.sum(q_sp * q_vl) + smooth) / (torch.sum(combine(q_spvp, q_slvl, q_sp)) + smooth)
    sens = (torch.sum(q_sl * q_vp) + smooth) / (torch.sum(combine(q_slvl, q_spvp, q_sl)) + smooth)
    return -2.0 * prec * sens / (prec + sens)


def reference_foreground(logits: torch.Tensor) -> torch.Tensor:
    fg = logits[:, 1:].max(dim=1, keepdim=True)[0]
    return torch.softmax(torch.cat([logits[:, :1], fg], 1), 1)[:, 1]


# ------------------------------------------------------------------------------------ test data
def touching_tubes(shape=(20, 24, 24)) -> torch.Tensor:
    """A label map (1, ...) with two tubes of radius 3 and 1.5 that touch along the thin one (labels 1, 2)."""
    z, y, x = np.indices(shape)
    seg = np.zeros(shape, np.int64)
    seg[(y - 10) ** 2 + (x - 10) ** 2 <= 9] = 1
    seg[((y - 10) ** 2 + (x - 14.5) ** 2 <= 2.25) & (seg == 0)] = 2  # runs along the first, touching it
    seg[(z - 10) ** 2 + (y - 18) ** 2 <= 4] = 2  # and a crossing thin vessel
    return torch.from_numpy(seg[None])


def noisy_logits(labels: torch.Tensor, n_classes: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    """Logits (B, K, ...) that mostly agree with ``labels`` (B, 1, ...), with noise: a realistic prediction."""
    g = torch.Generator().manual_seed(seed)
    onehot = torch.nn.functional.one_hot(labels[:, 0].long(), n_classes).movedim(-1, 1).float()
    return scale * onehot + 2.0 * torch.randn(onehot.shape, generator=g)


def batch_of_two(shape=(20, 24, 24)) -> torch.Tensor:
    a = touching_tubes(shape)
    return torch.stack([a, torch.flip(a, (-1,))])  # (2, 1, ...)


# ------------------------------------------------------------------------------------ the loss
def test_distance_transform_and_radius_maps_on_a_known_bar():
    m = torch.zeros(1, 7, 9)
    m[0, 1:6, 1:8] = 1  # a bar 5 voxels thick: centre row at distance 3
    d = distance_transform(m)
    np.testing.assert_allclose(d[0, :, 4].numpy(), [0, 1, 2, 3, 2, 1, 0])
    skel = torch.zeros_like(m)
    skel[0, 3, 2:7] = 1
    D, S, I = cbdice_radius_weights(m, skel, dim=2)  # noqa: E741 (the paper's names)
    assert D.max() == 1 and D[0, 2, 4] == pytest.approx(2 / 3)  # distances / the largest radius 3
    assert S[0, 3, 4] == 1 and S[0, 3, 2] == pytest.approx(2 / 3)  # the skeleton's end is 2 from the edge
    # linear inverse: (R - r + R_min) / R with R = 3, R_min = 1
    assert I[0, 3, 4] == pytest.approx(1 / 3) and I[0, 3, 2] == pytest.approx(2 / 3) and I[0, 0, 0] == 0
    _, _, I3 = cbdice_radius_weights(m[:, None], skel[:, None], dim=3)
    assert I3[0, 0, 3, 2] == pytest.approx(4 / 9)  # squared in 3D


@pytest.mark.parametrize("dims", [3, 2])
def test_cbdice_equals_the_reference_value_and_gradient(dims):
    labels = batch_of_two()
    if dims == 2:
        labels = labels[:, :, 10]
    logits = noisy_logits(labels, 3, seed=0)
    target = labels > 0

    def ours(z):
        return cbdice_loss(foreground_probability(z, [1, 2], regions=False), target)

    def ref(z):
        return reference_cbdice(reference_foreground(z), labels[:, 0])

    value, grad = grad_of(ours, logits)
    expected, expected_grad = grad_of(ref, logits)
    assert 0 < value < 1
    # 1 - cbDice against -cbDice: a constant 1 apart; relative error of cbDice itself
    assert abs((value - 1) - expected) / abs(expected) < 1e-5
    assert (grad - expected_grad).abs().max() / expected_grad.abs().max() < 1e-4
    assert grad.abs().sum() > 0
    # only the background and the largest foreground logit of a voxel get a gradient
    largest = logits[:, 1:].argmax(1) + 1
    loser = torch.where(largest == 1, 2, 1)
    assert torch.all(grad.gather(1, loser[:, None]) == 0)


def test_task_with_deep_supervision_sums_the_levels_with_their_weights():
    labels = batch_of_two()
    low = labels[..., ::2, ::2, ::2]
    logits = [noisy_logits(labels, 3, seed=1).requires_grad_(True), noisy_logits(low, 3, seed=2).requires_grad_(True)]
    weights = [2 / 3, 1 / 3]
    task = CbDiceTask([1, 2], [(1,), (2,)], deep_supervision_weights=weights)
    batch = AuxBatch(targets=None, valid=None, main_output=logits, main_target=[labels, low], data=None)
    ours = task.compute_losses(task(None, logits), batch)["cbdice"]
    ours.backward()
    grads = [z.grad.clone() for z in logits]
    for z in logits:
        z.grad = None
    ref = sum(w * reference_cbdice(reference_foreground(z), t[:, 0]) for w, z, t in zip(weights, logits, [labels, low]))
    ref.backward()
    assert abs((ours - 1) - ref) / abs(ref) < 1e-5
    for g, z in zip(grads, logits):
        assert (g - z.grad).abs().max() / z.grad.abs().max() < 1e-4
    assert task.loss_weights() == {"cbdice": 1.0} and task.hyperparameters()["iterations"] == 10


def test_empty_target_and_prediction_are_finite_and_perfect_is_zero():
    empty = torch.zeros(2, 1, 8, 8, 8)
    value, grad = grad_of(lambda p: cbdice_loss(p, empty), empty)
    assert value == 0 and torch.isfinite(grad).all()
    labels = batch_of_two()
    t = (labels > 0).float()
    assert float(cbdice_loss(t, t)) == pytest.approx(0, abs=1e-6)
    # a prediction without target and a target without prediction: finite, penalised
    for p, target in ((t * 0.9, torch.zeros_like(t)), (t * 0.1, t)):
        value, grad = grad_of(lambda x, target=target: cbdice_loss(x, target), p)
        assert torch.isfinite(value) and value > 0.5 and torch.isfinite(grad).all()


def test_ignored_voxels_get_no_gradient_and_the_official_counts_them_as_foreground():
    labels = batch_of_two()
    labels[..., :6] = 3  # an ignore label over a slab
    logits = noisy_logits(labels.clamp(max=2), 3, seed=3)
    valid = labels != 3
    task = CbDiceTask([1, 2], [(1,), (2,)])
    _, grad = grad_of(lambda z: task.compute_losses(task(None, z), AuxBatch(None, valid, z, labels, None))["cbdice"],
                      logits)
    assert torch.all(grad[..., :6] == 0) and grad[..., 6:].abs().sum() > 0
    assert task.target_mask(labels)[..., :6].all()  # y_true > 0 ...
    official = CbDiceTask([1, 2], [(1,), (2,)], mask_ignore=False)  # ... which their loss keeps
    value, grad = grad_of(lambda z: official.compute_losses(official(None, z), AuxBatch(None, valid, z, labels, None))
                          ["cbdice"], logits)
    expected, expected_grad = grad_of(lambda z: reference_cbdice(reference_foreground(z), labels[:, 0]), logits)
    assert abs((value - 1) - expected) / abs(expected) < 1e-5
    assert (grad - expected_grad).abs().max() / expected_grad.abs().max() < 1e-4


def test_region_datasets_use_the_union_and_the_most_likely_region():
    labels = batch_of_two()
    regions = torch.cat([labels >= 1, labels == 2], 1)  # nested regions, as nnU-Net's region targets
    z = noisy_logits(labels, 3, seed=4)[:, 1:]
    task = CbDiceTask([0, 1], None)
    out = task.compute_losses(task(None, z), AuxBatch(None, None, z, regions, None))["cbdice"]
    expected = cbdice_loss(torch.sigmoid(z.max(1, keepdim=True)[0]), labels > 0)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(task.target_mask(regions), labels > 0)


def test_soft_cbdice_rejects_bad_shapes():
    with pytest.raises(ValueError, match="differ"):
        soft_cbdice(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="expected"):
        soft_cbdice(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("importable, on_gpu", [({"cupy", "cucim"}, True), ({"cupy"}, False), (set(), False)])
def test_distance_transform_stays_on_the_gpu_only_with_cupy_and_cucim(monkeypatch, importable, on_gpu):
    import importlib.util

    from nnunet_aux.losses.cbdice import distance_transform_runs_on_gpu

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name in importable else None)
    assert distance_transform_runs_on_gpu() is on_gpu


@pytest.mark.parametrize("device, on_gpu, warned", [("cuda", False, True), ("cuda", True, False),
                                                    ("cpu", False, False)])
def test_cbdice_trainer_warns_when_its_distance_transforms_would_run_on_the_cpu(monkeypatch, device, on_gpu,
                                                                                 warned):
    from types import SimpleNamespace

    from nnunet_aux.training import thin_structure_trainers as module

    monkeypatch.setattr(module, "distance_transform_runs_on_gpu", lambda: on_gpu)
    printed = []
    trainer = SimpleNamespace(device=torch.device(device), print_to_log_file=lambda *a, **k: printed.append(a))
    assert module.nnUNetTrainerCbDice.warn_if_distance_transforms_leave_the_gpu(trainer) is warned
    assert printed == ([(module.CPU_DISTANCE_TRANSFORM_WARNING,)] if warned else [])
    if warned:
        assert "cuCIM" in printed[0][0] and "38 x" in printed[0][0]
