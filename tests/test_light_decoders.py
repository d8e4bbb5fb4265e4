"""Light scale decoders (issue #10): narrowed copies of nnU-Net's decoder, their cost, balanced BCE, head Dice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_heads import plain_unet, resenc_unet, residual_unet
from test_scale_task import DS_WEIGHTS, batch_for
from torch import nn

from nnunet_aux.heads import AuxiliaryDecoder, encoder_spec, narrow_channels
from nnunet_aux.training.seg_loss import BalancedBCEWithLogitsLoss, build_region_loss
from nnunet_aux.training.tasks import ScaleTask, default_scale_weights


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_macs(module: nn.Module, x_skips) -> int:
    """Multiply-accumulates of every convolution in one forward pass (hooks on Conv/ConvTranspose)."""
    total = [0]

    def hook(m, inputs, output):
        k = 1
        for s in m.kernel_size:
            k *= s
        if m.transposed:  # each input voxel is spread over the kernel
            total[0] += inputs[0].numel() // inputs[0].shape[0] * inputs[0].shape[0] * m.out_channels * k
        else:
            total[0] += output.numel() * m.in_channels * k
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    with torch.no_grad():
        module(x_skips)
    for h in handles:
        h.remove()
    return total[0]


@pytest.mark.parametrize("make, dim", [(plain_unet, 3), (resenc_unet, 3), (lambda: plain_unet(2), 2),
                                       (lambda: plain_unet(nonlin_first=True), 3), (residual_unet, 2)])
@pytest.mark.parametrize("width", [0.5, 0.25])
def test_light_decoder_keeps_outputs_and_structure(make, dim, width):
    net = make()
    spec = encoder_spec(net)
    full = AuxiliaryDecoder(net.decoder, 1, deep_supervision=True)
    light = AuxiliaryDecoder(net.decoder, 1, deep_supervision=True, width=width, spec=spec)
    skips = net.encoder(torch.randn(2, 1, *([16] * dim)))
    (out_full, first_full), (out_light, first_light) = full(skips), light(skips)
    assert [o.shape for o in out_light] == [o.shape for o in out_full]
    assert first_light.shape[1] == narrow_channels(spec.output_channels[-2], width) == light.first_stage_channels
    assert first_light.shape[2:] == first_full.shape[2:]
    # the same block types in the same order (plain or residual, nonlin_first), only narrower
    assert [type(m).__name__ for m in light.decoder.modules()] == [type(m).__name__ for m in full.decoder.modules()]
    assert n_params(light) < n_params(full)
    # gradients reach every parameter of the light decoder and the reductions
    sum(o.float().mean() for o in out_light).backward()
    assert all(p.grad is not None for p in light.parameters())


def test_light_decoder_cost_follows_the_width():
    net = plain_unet(features=(8, 16, 32, 64))
    spec = encoder_spec(net)
    skips = net.encoder(torch.randn(1, 1, 16, 32, 32))
    full = conv_macs(AuxiliaryDecoder(net.decoder, 1, True), skips)
    quarter = conv_macs(AuxiliaryDecoder(net.decoder, 1, True, width=0.25, spec=spec), skips)
    half = conv_macs(AuxiliaryDecoder(net.decoder, 1, True, width=0.5, spec=spec), skips)
    # every convolution reads and writes w times the channels (the skips are reduced first): ~ w^2,
    # plus the 1x1 reductions (~ w / 81 of a stage with two 3x3x3 convolutions)
    assert 0.0625 < quarter / full < 0.08
    assert 0.25 < half / full < 0.28


def test_narrowed_decoder_needs_the_spec_and_a_valid_width():
    net = plain_unet()
    with pytest.raises(ValueError, match="spec"):
        AuxiliaryDecoder(net.decoder, 1, True, width=0.5)
    for bad in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="width"):
            AuxiliaryDecoder(net.decoder, 1, True, width=bad, spec=encoder_spec(net))


def test_scale_task_with_light_decoders_trains():
    torch.manual_seed(0)
    net = plain_unet(features=(4, 8, 16, 16, 16))
    task = ScaleTask(encoder_spec(net), net.decoder, [1, 2, 3], ["small", "medium", "large"],
                     lambda: build_region_loss(False, False, False, DS_WEIGHTS, bce_pos_weight="balanced"), True,
                     default_scale_weights(3), contrastive_weight=0.53, voxels_per_scale=64, embedding_dim=8,
                     decoder_width=0.25)
    skips, batch = batch_for(net, task)
    losses = task.compute_losses(task(skips, batch.main_output), batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    # everything learns but the lowest-resolution outputs (deep-supervision weight 0, as in nnU-Net)
    unused = {n for n, p in task.named_parameters() if p.grad is None}
    assert unused and all(".seg_layers.0." in n for n in unused), unused
    assert all(p.grad is not None for n, p in task.named_parameters() if "skip_reduction" in n)
    assert task.hyperparameters()["decoder_width"] == 0.25


def test_balanced_bce_matches_a_direct_computation():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 6, 6, requires_grad=True)
    target = torch.zeros(2, 1, 6, 6)
    target[0, 0, :2, :2] = 1  # 4 of 72 voxels: weight 68 / 4 = 17
    loss = BalancedBCEWithLogitsLoss("balanced", max_pos_weight=50)(logits, target)
    p = torch.sigmoid(logits)
    direct = -(17 * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    assert torch.allclose(loss, direct, atol=1e-6)
    g1, = torch.autograd.grad(loss, logits)
    g2, = torch.autograd.grad(direct, logits)
    assert torch.allclose(g1, g2, atol=1e-6)
    # the cap, a fixed weight, no foreground (weight 1 at most: never inf or NaN)
    assert float(BalancedBCEWithLogitsLoss("balanced", max_pos_weight=10).current_pos_weight(target)) == 10
    assert float(BalancedBCEWithLogitsLoss(3.0).current_pos_weight(target)) == 3
    empty = BalancedBCEWithLogitsLoss("balanced")(logits, torch.zeros_like(target))
    assert torch.isfinite(empty)
    with pytest.raises(ValueError):
        BalancedBCEWithLogitsLoss("often")


def test_balanced_bce_in_nnunets_loss_with_ignore_label():
    """Inside nnU-Net's DC_and_BCE_loss with an ignore channel, the balanced BCE is averaged over the
    valid voxels only, beside nnU-Net's masked soft Dice; ignored voxels get no gradient."""
    loss = build_region_loss(False, False, True, None, bce_pos_weight="balanced")
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    target = torch.zeros(2, 2, 8, 8, dtype=torch.bool)
    target[:, 0, 2:4, 2:4] = True  # 8 foreground voxels of 128
    target[:, 1, :, 6:] = True  # ignored: the last two columns, 32 voxels
    value = loss(logits, target)
    # by hand: the weight is computed over the region channel's voxels, ignored ones counted as
    # background (120 / 8 = 15; the valid voxels alone would give 88 / 8 = 11); the weighted BCE is
    # averaged over the 96 valid voxels; Dice per sample over valid voxels, smooth 1e-5, negated
    p, y, valid = torch.sigmoid(logits), target[:, :1].float(), (~target[:, 1:]).float()
    bce = (-(15 * y * torch.log(p) + (1 - y) * torch.log(1 - p)) * valid).sum() / 96
    dice = (2 * (p * y * valid).sum((2, 3)) + 1e-5) / ((y * valid).sum((2, 3)) + (p * valid).sum((2, 3)) + 1e-5)
    torch.testing.assert_close(value, bce - dice.mean())
    grad, = torch.autograd.grad(value, logits)
    assert torch.all(grad[..., 6:] == 0) and torch.all(grad[..., :6] != 0)
    changed = logits.detach().clone()
    changed[..., 6:] = 100.0  # whatever is predicted at ignored voxels does not count
    torch.testing.assert_close(loss(changed, target), value.detach())


def test_validation_counts_are_each_decoders_own_confusion():
    torch.manual_seed(0)
    net = plain_unet(features=(4, 8, 16, 16, 16))
    task = ScaleTask(encoder_spec(net), net.decoder, [1, 2, 3], ["small", "medium", "large"],
                     lambda: build_region_loss(False, False, False, DS_WEIGHTS), True, default_scale_weights(3))
    skips, batch = batch_for(net, task)
    outputs = task(skips, batch.main_output)
    # make decoder "medium" predict exactly its target, decoder "small" nothing
    ref = batch.targets[0]
    outputs["logits"][1][0] = torch.where(ref[:, 1:2], 10.0, -10.0)
    outputs["logits"][0][0] = torch.full_like(outputs["logits"][0][0], -10.0)
    counts = task.validation_counts(outputs, batch)
    n_medium, n_small = int(ref[:, 1].sum()), int(ref[:, 0].sum())
    assert counts["scale_medium"].tolist() == [n_medium, 0, 0]
    assert counts["scale_small"].tolist() == [0, 0, n_small]


@pytest.mark.parametrize("make, dim", [(plain_unet, 3), (resenc_unet, 3), (lambda: plain_unet(2), 2),
                                       (residual_unet, 2)])
@pytest.mark.parametrize("stages, width", [(-1, 0.25), (2, 0.25), (-1, 1.0)])
def test_cut_decoder_gives_the_lower_outputs(make, dim, stages, width):
    net = make()
    spec = encoder_spec(net)
    n = len(net.decoder.stages)
    full = AuxiliaryDecoder(net.decoder, 1, deep_supervision=True)
    cut = AuxiliaryDecoder(net.decoder, 1, deep_supervision=True, width=width, spec=spec, stages=stages)
    kept = stages if stages > 0 else n + stages
    assert cut.num_stages == len(cut.decoder.stages) == kept
    skips = net.encoder(torch.randn(2, 1, *([16] * dim)))
    (out_full, first_full), (out_cut, first_cut) = full(skips), cut(skips)
    # the outputs of the kept stages, at the lower deep-supervision resolutions
    assert [o.shape for o in out_cut] == [o.shape for o in out_full[n - kept:]]
    assert first_cut.shape[2:] == first_full.shape[2:]
    if width < 1:  # only the skips the kept stages read are reduced
        assert len(cut.skip_reduction.reductions) == kept + 1
    sum(o.float().mean() for o in out_cut).backward()
    assert all(p.grad is not None for p in cut.parameters())
    assert n_params(cut) < n_params(full)
    cut.deep_supervision = False
    single, _ = cut(skips)
    assert single.shape == out_cut[0].shape


def test_cut_decoder_rejects_impossible_stage_counts():
    net = plain_unet()
    n = len(net.decoder.stages)
    for bad in (0, n + 1, -n, True, "2", 1.5):
        with pytest.raises(ValueError, match="decoder stages"):
            AuxiliaryDecoder(net.decoder, 1, True, stages=bad)


def light_scale_task(deep, stages, target_downsampling="nearest", ignore_label=False):
    """A ScaleTask with light decoders of the given stages; returns (network, task, levels each loss was built for)."""
    torch.manual_seed(0)
    net = plain_unet(features=(4, 8, 16, 16, 16))
    asked = []

    def make_loss(levels=None):
        asked.append(levels)
        weights = DS_WEIGHTS[-levels:] if levels else DS_WEIGHTS
        return build_region_loss(False, False, ignore_label, [w / sum(weights) for w in weights] if deep else None,
                                 bce_pos_weight="balanced")

    task = ScaleTask(encoder_spec(net), net.decoder, [1, 2, 3], ["small", "medium", "large"], make_loss, deep,
                     default_scale_weights(3), contrastive_weight=0.53, voxels_per_scale=64, embedding_dim=8,
                     decoder_width=0.25, decoder_stages=stages, target_downsampling=target_downsampling)
    return net, task, asked


def forward_and_backward(task, skips, batch):
    """The task's outputs for ``batch``, after checking that its losses are finite and backpropagate."""
    outputs = task(skips, batch.main_output)
    losses = task.compute_losses(outputs, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    return outputs


def set_top_logits(outputs, s: int, logits) -> None:
    """Replace decoder ``s``'s highest-resolution output (the first deep-supervision level, if a list)."""
    if isinstance(outputs["logits"][s], list):
        outputs["logits"][s][0] = logits
    else:
        outputs["logits"][s] = logits


@pytest.mark.parametrize("deep", [True, False])
def test_scale_task_with_cut_decoders_uses_the_matching_targets(deep):
    net, task, asked = light_scale_task(deep, -1)
    assert asked == [3, 3, 3] and task.kept_stages == [3, 3, 3] and task.num_levels == 4
    skips, batch = batch_for(net, task)
    if not deep:
        batch.targets = batch.targets[0]
    outputs = forward_and_backward(task, skips, batch)
    # counts at the decoders' highest output (half resolution): a perfect "medium" decoder
    ref = (batch.targets[1] if deep else batch.targets[:, :, ::2, ::2, ::2])[:, 1:2]
    top = outputs["logits"][1][0] if deep else outputs["logits"][1]
    assert top.shape[2:] == ref.shape[2:]
    set_top_logits(outputs, 1, torch.where(ref, 10.0, -10.0))
    counts = task.validation_counts(outputs, batch)
    assert counts["scale_medium"].tolist() == [int(ref.sum()), 0, 0]
    assert task.hyperparameters()["decoder_stages"] == -1


@pytest.mark.parametrize("deep", [True, False])
def test_scale_task_with_decoder_stages_per_scale(deep):
    """(None, -1, -1): the small-vessel decoder keeps full resolution, the others stop one level lower."""
    net, task, asked = light_scale_task(deep, (None, -1, -1))
    assert asked == [None, 3, 3] and task.kept_stages == [4, 3, 3]
    assert task.hyperparameters()["decoder_stages"] == [None, -1, -1]
    skips, batch = batch_for(net, task)
    if not deep:
        batch.targets = batch.targets[0]
    outputs = forward_and_backward(task, skips, batch)
    top = [lg[0] if deep else lg for lg in outputs["logits"]]
    full = batch.targets[0] if deep else batch.targets
    assert top[0].shape[2:] == full.shape[2:] and all(t.shape[-1] == full.shape[-1] // 2 for t in top[1:])
    # each decoder is scored at its own highest resolution: a perfect small decoder at full resolution
    ref = full[:, 0:1]
    perfect = torch.where(ref, 10.0, -10.0)
    set_top_logits(outputs, 0, perfect)
    counts = task.validation_counts(outputs, batch)
    assert counts["scale_small"].tolist() == [int(ref.sum()), 0, 0]
    with pytest.raises(ValueError, match="3 scales need 3 decoder_stages"):
        light_scale_task(deep, (None, -1))


def thin_line_batch(net, task, valid=None):
    """A one-voxel-wide small vessel at even coordinates, with nnU-Net's nearest-exact target pyramid.

    nearest-exact halving keeps the odd coordinates (source index 2 i + 1), so the line is absent from
    every lower level of nnU-Net's pyramid.
    """
    skips, batch = batch_for(net, task)
    full = torch.zeros_like(batch.targets[0])
    full[:, 0, 4, 6, :] = True          # small: a line along the last axis
    full[:, 2, 20:28, 8:24, 8:24] = True  # large: a block
    batch.targets = [full] + [F.interpolate(full.float(), size=t.shape[2:], mode="nearest-exact") > 0.5
                              for t in batch.targets[1:]]
    if valid is not None:
        batch.valid = [valid] + [F.interpolate(valid.float(), size=t.shape[2:], mode="nearest-exact") > 0.5
                                 for t in batch.targets[1:]]
    return skips, batch


@pytest.mark.parametrize("deep", [True, False])
def test_max_target_downsampling_keeps_thin_vessels(deep):
    """target_downsampling='max': a half-resolution decoder is taught the thin line nnU-Net's pyramid drops."""
    net, task, _ = light_scale_task(deep, -1, target_downsampling="max")
    assert task.hyperparameters()["target_downsampling"] == "max"
    skips, batch = thin_line_batch(net, task)
    assert not batch.targets[1][:, 0].any()  # nnU-Net's own half-resolution target has lost the line
    if not deep:
        batch.targets = batch.targets[0]
    outputs = forward_and_backward(task, skips, batch)
    # the small decoder's top output (half resolution) is scored against the pooled line: 16 voxels at (2, 3, :)
    expected = torch.zeros(2, 1, 16, 16, 16, dtype=torch.bool)
    expected[:, 0, 2, 3, :] = True
    perfect = torch.where(expected, 10.0, -10.0)
    set_top_logits(outputs, 0, perfect)
    assert task.validation_counts(outputs, batch)["scale_small"].tolist() == [32, 0, 0]
    # scored against nnU-Net's own pyramid the same prediction would be all false positives
    _, nearest, _ = light_scale_task(deep, -1)
    assert nearest.validation_counts(outputs, batch)["scale_small"].tolist() == [0, 32, 0]
    if deep:
        # every level keeps the line, down to the contrastive loss's labels at 1/8 resolution
        pooled, _ = task._levels(batch.targets, None)
        assert [t.shape for t in pooled] == [t.shape for t in batch.targets]
        assert all(t[:, 0].sum() > 0 for t in pooled)


def test_max_target_downsampling_respects_the_valid_mask():
    """With an ignore label a coarse voxel is the scale's when any valid fine voxel is, valid when any is."""
    net, task, _ = light_scale_task(True, -1, target_downsampling="max", ignore_label=True)
    valid = torch.ones(2, 1, 32, 32, 32, dtype=torch.bool)
    valid[:, :, :, :, 16:] = False  # the second half of the line is not annotated
    skips, batch = thin_line_batch(net, task, valid=valid)
    targets, masks = task._levels(batch.targets, batch.valid)
    assert targets[1][:, 0, 2, 3, :8].all() and not targets[1][:, 0, :, :, 8:].any()
    assert masks[1][:, :, :, :, :8].all() and not masks[1][:, :, :, :, 8:].any()
    outputs = task(skips, batch.main_output)
    assert all(torch.isfinite(v) for v in task.compute_losses(outputs, batch).values())
    with pytest.raises(ValueError, match="target_downsampling must be 'nearest' or 'max'"):
        light_scale_task(True, -1, target_downsampling="area")


def test_decoders_are_counted_at_several_thresholds_and_the_best_is_logged():
    """A class-weighted decoder over-segments at logit 0; the counts at higher thresholds show what it learned."""
    from nnunet_aux.training.base import nnUNetTrainerAux
    from nnunet_aux.training.tasks.scale import COUNT_THRESHOLDS

    torch.manual_seed(0)
    net = plain_unet(features=(4, 8, 16, 16, 16))
    task = ScaleTask(encoder_spec(net), net.decoder, [1, 2, 3], ["small", "medium", "large"],
                     lambda: build_region_loss(False, False, False, DS_WEIGHTS, bce_pos_weight=20.0), True,
                     default_scale_weights(3))
    skips, batch = batch_for(net, task)
    outputs = task(skips, batch.main_output)
    ref = batch.targets[0][:, 1:2]
    # the medium decoder: logit 5.5 on its target, 2.5 everywhere else
    outputs["logits"][1][0] = torch.where(ref, 5.5, 2.5)
    counts = task.validation_counts(outputs, batch)
    n, total = int(ref.sum()), ref.numel()
    assert len(counts) == 3 * len(COUNT_THRESHOLDS)
    assert counts["scale_medium"].tolist() == [n, total - n, 0]
    assert counts["scale_medium@logit>3"].tolist() == [n, 0, 0]
    assert counts["scale_medium@logit>6"].tolist() == [0, 0, n]

    class Log:  # what _log_head_dice needs of a trainer
        def __init__(self):
            self.values, self.lines = {}, []

        from_all_ranks = staticmethod(lambda value: [value])

        def log_epoch_value(self, key, value):
            self.values[key] = value

        def print_to_log_file(self, *args):
            self.lines.append(" ".join(map(str, args)))

    log = Log()
    val_outputs = [{f"counts_{k}": v.numpy() for k, v in counts.items()}] * 2
    nnUNetTrainerAux._log_head_dice(log, val_outputs)
    assert log.values["val_dice_scale_medium"] == pytest.approx(2 * n / (2 * n + total - n))
    assert log.values["val_dice_best_scale_medium"] == 1.0
    assert "scale_medium 1.0000 (logit>3)" in log.lines[-1]
    # heads counted at one threshold only get no "best" key
    log = Log()
    nnUNetTrainerAux._log_head_dice(log, [{"counts_cls": np.array([3, 1, 0])}])
    assert log.values == {"val_dice_cls": pytest.approx(6 / 7)} and len(log.lines) == 1
