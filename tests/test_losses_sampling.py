"""Voxel sampling of nnunet_aux.losses.sampling."""

from __future__ import annotations

import pytest
import torch

from nnunet_aux.losses import (
    gather_voxels,
    sample_simsiam_voxels,
    sample_voxels,
    voxel_hardness,
)
from nnunet_aux.losses.sampling import sample_simsiam_voxels_layers


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def labels() -> torch.Tensor:
    # 2 x 6 x 6 x 6 with 0..3; class 3 appears in 5 voxels only.
    torch.manual_seed(0)
    values = torch.randint(0, 3, (2, 6, 6, 6))
    scale_three = torch.zeros_like(values, dtype=torch.bool)
    scale_three.view(-1)[torch.tensor([3, 50, 200, 300, 431])] = True
    values[scale_three] = 3
    return values


def test_sample_voxels_respects_n_per_class(labels):
    indices, classes = sample_voxels(labels, 10, generator=_generator())
    assert indices.dtype == torch.int64 and classes.dtype == torch.int64
    assert torch.equal(labels.reshape(-1)[indices], classes)
    assert torch.bincount(classes, minlength=4).tolist() == [0, 10, 10, 5]
    assert indices.unique().numel() == indices.numel()  # without replacement
    assert torch.equal(classes, classes.sort().values)  # grouped by class


def test_sample_voxels_missing_class_and_empty_batch():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 0, :3] = 2
    indices, classes = sample_voxels(labels, 8)
    assert classes.tolist() == [2, 2, 2]
    assert sorted(indices.tolist()) == [0, 1, 2]
    indices, classes = sample_voxels(torch.zeros(1, 4, 4, dtype=torch.long), 8)
    assert indices.numel() == 0 and classes.numel() == 0
    assert sample_voxels(labels, 0)[0].numel() == 0


def test_sample_voxels_valid_mask_and_negative_labels(labels):
    valid = torch.zeros_like(labels, dtype=torch.bool)
    valid[1] = True
    labels = labels.clone()
    labels[1, 0] = -1  # e.g. a padding value: never drawn
    indices, _ = sample_voxels(labels, 1000, valid_mask=valid, generator=_generator())
    expected = torch.nonzero(((labels > 0) & valid).reshape(-1)).squeeze(1)
    assert torch.equal(indices.sort().values, expected)


def test_sample_voxels_hard_mode_picks_the_hardest(labels):
    hardness = torch.rand(labels.shape, generator=_generator(1))
    indices, classes = sample_voxels(labels, 7, mode="hard", hardness=hardness)
    flat_labels, flat_hardness = labels.reshape(-1), hardness.reshape(-1)
    for c in (1, 2, 3):
        members = torch.nonzero(flat_labels == c).squeeze(1)
        k = min(7, members.numel())
        hardest = members[flat_hardness[members].topk(k).indices]
        assert set(indices[classes == c].tolist()) == set(hardest.tolist())


def test_sample_voxels_hard_mode_breaks_ties_at_random():
    labels = torch.ones(1, 10, 10, dtype=torch.long)
    hardness = torch.zeros(1, 10, 10)
    hardness[0, 0, 0] = 1  # one clear winner, then 99 ties
    picks = [
        sample_voxels(labels, 3, "hard", hardness=hardness, generator=_generator(s))[0]
        for s in range(5)
    ]
    assert all(p[0].item() == 0 for p in picks)
    assert len({tuple(p[1:].tolist()) for p in picks}) > 1
    assert not all(p[1:].tolist() == [1, 2] for p in picks)  # not by position


def test_sample_voxels_is_reproducible_and_uniform(labels):
    first = sample_voxels(labels, 10, generator=_generator(3))
    again = sample_voxels(labels, 10, generator=_generator(3))
    other = sample_voxels(labels, 10, generator=_generator(4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])

    # Every voxel of a class gets drawn sometimes, not only the first ones.
    small = torch.ones(1, 10, dtype=torch.long)
    seen = set()
    generator = _generator(5)
    for _ in range(40):
        seen.update(sample_voxels(small, 2, generator=generator)[0].tolist())
    assert seen == set(range(10))


def test_sample_voxels_rejects_bad_input(labels):
    with pytest.raises(ValueError, match="integer"):
        sample_voxels(labels.float(), 3)
    with pytest.raises(ValueError, match="mode"):
        sample_voxels(labels, 3, mode="easy")
    with pytest.raises(ValueError, match="hardness"):
        sample_voxels(labels, 3, mode="hard")
    with pytest.raises(ValueError, match="valid_mask"):
        sample_voxels(labels, 3, valid_mask=torch.ones(2, 6, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_per_class"):
        sample_voxels(labels, -1)


def test_gather_voxels_matches_channel_last_indexing():
    features = torch.randn(2, 3, 4, 5, 6, requires_grad=True)
    indices = torch.tensor([0, 7, 119, 120, 239])
    vectors = gather_voxels(features, indices)
    expected = features.permute(0, 2, 3, 4, 1).reshape(-1, 3)[indices]
    assert torch.equal(vectors, expected)
    vectors.sum().backward()
    assert features.grad.sum().item() == pytest.approx(15.0)


def test_voxel_hardness():
    probabilities = torch.tensor([[[0.9, 0.2, 0.3, 0.6], [0.1, 0.7, 0.4, 0.5]]])
    labels = torch.tensor([[1, 2, 0, 2]])
    torch.testing.assert_close(
        voxel_hardness(probabilities, labels), torch.tensor([[0.1, 0.3, 0.0, 0.5]])
    )
    with pytest.raises(ValueError, match="channels"):
        voxel_hardness(probabilities, torch.tensor([[3, 0, 0, 0]]))
    with pytest.raises(ValueError, match="probabilities"):
        voxel_hardness(probabilities, torch.tensor([[1, 0, 0]]))


def test_simsiam_sampling_prefers_false_negatives():
    torch.manual_seed(6)
    labels = torch.randint(0, 3, (2, 8, 8, 8))
    pred = torch.where(torch.rand(labels.shape) < 0.3, 0, labels)
    flat, flat_pred = labels.reshape(-1), pred.reshape(-1)
    false_negative = (flat > 0) & (flat_pred != flat)
    n_fn = int(false_negative.sum())
    n_foreground = int((flat > 0).sum())
    assert 50 < n_fn < n_foreground - 100

    # Budget above the false negatives: all of them first, then the rest at random.
    indices, classes = sample_simsiam_voxels(
        labels, pred, max_total=n_fn + 100, max_false_negative=1000, generator=_generator()
    )
    assert indices.numel() == n_fn + 100
    assert false_negative[indices[:n_fn]].all() and not false_negative[indices[n_fn:]].any()
    assert (classes > 0).all() and torch.equal(flat[indices], classes)

    # Cap on false negatives: the extra ones are not drawn at all.
    indices, _ = sample_simsiam_voxels(
        labels, pred, max_total=n_foreground, max_false_negative=20, generator=_generator()
    )
    assert int(false_negative[indices].sum()) == 20
    assert indices.numel() == 20 + n_foreground - n_fn

    # Small total budget: everything drawn is a false negative.
    indices, _ = sample_simsiam_voxels(labels, pred, max_total=30, max_false_negative=1000)
    assert indices.numel() == 30 and false_negative[indices].all()


def test_simsiam_sampling_without_predictions_background_and_mask():
    labels = torch.tensor([[0, 0, 1, 1, 2, 2, -1]])
    indices, classes = sample_simsiam_voxels(labels, generator=_generator())
    assert sorted(indices.tolist()) == [2, 3, 4, 5]
    indices, _ = sample_simsiam_voxels(labels, include_background=True)
    assert sorted(indices.tolist()) == [0, 1, 2, 3, 4, 5]
    valid = torch.tensor([[True, True, True, False, True, False, True]])
    indices, _ = sample_simsiam_voxels(labels, valid_mask=valid, include_background=True)
    assert sorted(indices.tolist()) == [0, 1, 2, 4]
    assert sample_simsiam_voxels(labels, max_total=3)[0].numel() == 3

    first = sample_simsiam_voxels(labels, max_total=2, generator=_generator(9))
    again = sample_simsiam_voxels(labels, max_total=2, generator=_generator(9))
    assert torch.equal(first[0], again[0])

    with pytest.raises(ValueError, match="pred_labels"):
        sample_simsiam_voxels(labels, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_total"):
        sample_simsiam_voxels(labels, max_total=-5)


def _layer_batch(seed: int):
    """Two layers of different sizes with labels 0..2, some voxels mispredicted."""
    g = torch.Generator().manual_seed(seed)
    labels = [torch.randint(0, 3, (2, 8, 8, 8), generator=g), torch.randint(0, 3, (2, 4, 4, 4), generator=g)]
    pred = [torch.where(torch.rand(y.shape, generator=g) < 0.3, 0, y) for y in labels]
    return labels, pred


@pytest.mark.parametrize("max_total, max_fn", [(10_000, 1000), (150, 1000), (10_000, 20), (30, 1000), (0, 5)])
def test_simsiam_layer_draws_follow_the_single_layer_rules(max_total, max_fn):
    labels, pred = _layer_batch(3)
    draws = sample_simsiam_voxels_layers(labels, pred, max_total=max_total, max_false_negative=max_fn,
                                         generator=_generator())
    assert len(draws) == 2
    for y, yp, (indices, classes) in zip(labels, pred, draws):
        flat, flat_pred = y.reshape(-1), yp.reshape(-1)
        false_negative = (flat > 0) & (flat_pred != flat)
        n_fn, n_fg = int(false_negative.sum()), int((flat > 0).sum())
        n_chosen_fn = min(n_fn, max_fn, max_total)
        # as sample_simsiam_voxels: false negatives first (at most max_fn), the rest after them
        assert indices.numel() == min(max_total, min(n_fn, max_fn) + n_fg - n_fn)
        assert false_negative[indices[:n_chosen_fn]].all() and not false_negative[indices[n_chosen_fn:]].any()
        assert torch.equal(flat[indices], classes) and (classes > 0).all()
        assert indices.unique().numel() == indices.numel()


def test_simsiam_layer_draws_masks_background_missing_predictions_and_generator():
    labels = [torch.tensor([[0, 0, 1, 1, 2, 2, -1]]), torch.tensor([[2, 0, -1]])]
    draws = sample_simsiam_voxels_layers(labels, generator=_generator())
    assert [sorted(i.tolist()) for i, _ in draws] == [[2, 3, 4, 5], [0]]
    draws = sample_simsiam_voxels_layers(labels, include_background=True)
    assert [sorted(i.tolist()) for i, _ in draws] == [[0, 1, 2, 3, 4, 5], [0, 1]]
    valid = [torch.tensor([[True, True, True, False, True, False, True]]), None]
    draws = sample_simsiam_voxels_layers(labels, valid_masks=valid, include_background=True)
    assert [sorted(i.tolist()) for i, _ in draws] == [[0, 1, 2, 4], [0, 1]]
    # a layer with predictions prefers its false negatives, one without draws at random
    pred = [torch.tensor([[0, 0, 0, 1, 2, 2, 0]]), None]
    (indices, classes), _ = sample_simsiam_voxels_layers(labels, pred, max_total=2, max_false_negative=1)
    assert indices[0].item() == 2 and indices[1].item() in (3, 4, 5)
    first = sample_simsiam_voxels_layers(labels, max_total=2, generator=_generator(9))
    again = sample_simsiam_voxels_layers(labels, max_total=2, generator=_generator(9))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    # every layer is drawn uniformly: over many draws each candidate comes up about equally often
    hits = torch.zeros(7)
    for seed in range(400):
        (indices, _), _ = sample_simsiam_voxels_layers(labels, max_total=2, generator=_generator(seed))
        hits[indices] += 1
    assert hits[[0, 1, 6]].sum() == 0 and (hits[2:6] - 200).abs().max() < 45
    assert sample_simsiam_voxels_layers([]) == []
    with pytest.raises(ValueError, match="pred_labels"):
        sample_simsiam_voxels_layers(labels, [torch.zeros(1, 3, dtype=torch.long), None])
    with pytest.raises(ValueError, match="one entry per layer"):
        sample_simsiam_voxels_layers(labels, [None])
    with pytest.raises(ValueError, match="max_total"):
        sample_simsiam_voxels_layers(labels, max_total=-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_simsiam_layer_draws_do_not_depend_on_the_device():
    labels, pred = _layer_batch(4)
    on_cpu = sample_simsiam_voxels_layers(labels, pred, max_total=100, max_false_negative=30,
                                          generator=_generator(2))
    on_gpu = sample_simsiam_voxels_layers([y.cuda() for y in labels], [y.cuda() for y in pred], max_total=100,
                                          max_false_negative=30, generator=_generator(2))
    for (a, ca), (b, cb) in zip(on_cpu, on_gpu):
        assert torch.equal(a, b.cpu()) and torch.equal(ca, cb.cpu())
