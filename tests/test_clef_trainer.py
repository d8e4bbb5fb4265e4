"""nnUNetTrainerCLEFPretrain in-process, on hand-written plans (3d_fullres and 2d) and synthetic batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from clef_plans import DATASET_JSON, make_plans


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    """nnU-Net folders for trainers built from :func:`make_plans` (no real data: batches are made by hand)."""
    from nnunet_aux.training import trainer_path

    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / k).mkdir()
        monkeypatch.setenv(k, str(tmp_path / k))
    monkeypatch.setenv("nnUNet_extTrainer", trainer_path())
    monkeypatch.setenv("nnUNet_compile", "false")
    plans = make_plans()
    for cfg in plans["configurations"].values():  # nnU-Net infers its dataset class from the files there
        folder = tmp_path / "nnUNet_preprocessed" / plans["dataset_name"] / cfg["data_identifier"]
        folder.mkdir(parents=True)
        (folder / "case.b2nd").touch()
    return tmp_path


def build(cls, configuration="3d_fullres", dataset_json=None, initialize=True, **settings):
    trainer = cls({**make_plans(), "continue_training": False}, configuration, 0, dataset_json or DATASET_JSON,
                  torch.device("cpu"))
    for k, v in settings.items():
        setattr(trainer, k, v)
    if initialize:
        trainer.initialize()
    return trainer


def batch_for(trainer, seed=0, label=1):
    g = torch.Generator().manual_seed(seed)
    patch = trainer.configuration_manager.patch_size
    data = torch.randn(2, 1, *patch, generator=g)
    data[:, :, : patch[0] // 2] += 2  # some structure: two halves
    return {"data": data, "target": torch.full((2, 1, *patch), float(label))}


def clef_trainer_class():
    from nnunet_aux.training.trainers import nnUNetTrainerCLEFPretrain

    return nnUNetTrainerCLEFPretrain


def test_defaults_are_the_papers_and_reach_the_saved_settings(nnunet_dirs):
    trainer = build(clef_trainer_class())
    hp = trainer.aux_hyperparameters()["clef"]
    assert (hp["margin"], hp["min_distance_mm"], hp["max_rotation_deg"], hp["scale_range"], hp["max_shift"]) == \
        (-0.9, 10.0, 30.0, [1.0, 1.5], 0.1)
    assert hp["weights"] == {"decoding": 1.0, "discriminative": 1.0, "equivariance": 1.0}
    assert hp["reduction"] == "sum" and hp["spacing_mm"] == [3.0, 1.5, 1.5]
    assert hp["feature_dim"] == hp["hidden_channels"] == 4  # the width of the plan's last decoder stage
    assert trainer.enable_deep_supervision is False
    log = open(trainer.log_file, encoding="utf-8", errors="replace").read()
    assert "nnunet_aux settings" in log and '"min_distance_mm": 10.0' in log

    custom = build(clef_trainer_class(), clef_feature_dim=8, clef_anchors=5, clef_leaves=50, clef_margin=-0.5,
                   clef_min_distance_mm=20.0, clef_equivariance_weight=2.0, clef_discriminative_reduction="mean")
    hp = custom.aux_hyperparameters()["clef"]
    assert (hp["feature_dim"], hp["n_anchors"], hp["n_leaves"], hp["margin"], hp["min_distance_mm"],
            hp["weights"]["equivariance"], hp["reduction"]) == (8, 5, 50, -0.5, 20.0, 2.0, "mean")
    assert custom.aux_tasks["clef"].head.feature_head[-1].out_channels == 8


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_a_step_trains_the_unet_and_heads_but_not_the_segmentation_layers(nnunet_dirs, configuration):
    trainer = build(clef_trainer_class(), configuration)
    ndim = 3 if configuration == "3d_fullres" else 2
    task = trainer.aux_tasks["clef"]
    conv = torch.nn.Conv3d if ndim == 3 else torch.nn.Conv2d
    assert all(isinstance(m, conv) for m in task.head.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert task.hyperparameters()["spacing_mm"] == [3.0, 1.5, 1.5][-ndim:]
    net = trainer.network
    parts = {"encoder": net.encoder, "decoder": net.decoder.stages, "seg_layers": net.decoder.seg_layers,
             "heads": trainer.aux_tasks}
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in parts.items()}
    trainer.on_train_epoch_start()
    out = trainer.train_step(batch_for(trainer))
    assert set(out) == {"loss", "loss_decoding", "loss_discriminative", "loss_equivariance"}
    assert all(np.isfinite(v) for v in out.values())
    assert out["loss"] == pytest.approx(out["loss_decoding"] + out["loss_discriminative"] + out["loss_equivariance"],
                                        rel=1e-5)
    assert -1 <= out["loss_equivariance"] <= 1 and out["loss_discriminative"] >= 0
    changed = {k: any(not torch.equal(b, p) for b, p in zip(before[k], m.parameters())) for k, m in parts.items()}
    assert changed == {"encoder": True, "decoder": True, "seg_layers": False, "heads": True}
    assert not any(p.requires_grad for p in net.decoder.seg_layers.parameters())

    with torch.no_grad():
        trainer.on_validation_epoch_start()
        val = [trainer.validation_step(batch_for(trainer, seed=1)) for _ in range(2)]
    trainer.on_validation_epoch_end(val)
    logging = trainer.logger.local_logger.my_fantastic_logging
    assert math.isnan(logging["mean_fg_dice"][-1]) and logging["dice_per_class_or_region"][-1] == []
    assert logging["val_losses"][-1] == pytest.approx(np.mean([v["loss"] for v in val]))
    assert set(k for k in logging if k.startswith("val_loss_")) == {
        "val_loss_decoding", "val_loss_discriminative", "val_loss_equivariance"}


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_network_weights_are_the_stock_networks_and_load_as_pretrained_weights(nnunet_dirs, tmp_path, configuration):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = build(clef_trainer_class(), configuration)
    trainer.on_train_epoch_start()
    trainer.train_step(batch_for(trainer))
    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert set(ckpt["aux_state"]["hyperparameters"]) == {"clef"}
    assert all(k.startswith("clef.head.") for k in ckpt["aux_state"]["task_weights"])

    # stock nnU-Net, fine-tuning on a labelled dataset with three classes: every key but the segmentation layers
    labelled = {**DATASET_JSON, "labels": {"background": 0, "liver": 1, "tumour": 2}}
    stock = build(nnUNetTrainer, configuration, dataset_json=labelled)
    stock_sd = stock.network.state_dict()
    assert set(ckpt["network_weights"]) == set(stock_sd)
    load_pretrained_weights(stock.network, path)
    for k, v in stock.network.state_dict().items():
        if ".seg_layers." not in k:
            torch.testing.assert_close(v, ckpt["network_weights"][k], rtol=0, atol=0)


def test_resume_restores_heads_optimizer_epoch_and_logs(nnunet_dirs, tmp_path):
    trainer = build(clef_trainer_class())
    trainer.logger.plot_progress_png = lambda folder: None  # progress.png: see test_clef_e2e.py
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([trainer.train_step(batch_for(trainer))])
    with torch.no_grad():
        trainer.on_validation_epoch_start()
        trainer.on_validation_epoch_end([trainer.validation_step(batch_for(trainer, 1))])
    trainer.on_epoch_end()
    path = str(tmp_path / "checkpoint.pth")
    trainer.save_checkpoint(path)

    fresh = build(clef_trainer_class())
    fresh.load_checkpoint(path)
    for k, v in trainer.aux_tasks.state_dict().items():
        torch.testing.assert_close(fresh.aux_tasks.state_dict()[k], v, rtol=0, atol=0)
    # nnU-Net saves the epoch to run next
    assert fresh.current_epoch == trainer.current_epoch + 1 and fresh._best_ema == pytest.approx(trainer._best_ema)
    assert len(fresh.optimizer.param_groups) == 2 and len(fresh.optimizer.state) > 0
    assert fresh.logger.get_value("train_loss_discriminative", step=None) == \
        trainer.logger.get_value("train_loss_discriminative", step=None)


def test_best_checkpoint_follows_the_validation_loss(nnunet_dirs):
    trainer = build(clef_trainer_class(), initialize=False)
    trainer.logger.local_logger.my_fantastic_logging["val_losses"] = [10.0, float("nan"), 5.0]
    assert trainer.validation_loss_ema() == pytest.approx(0.9 * 10 + 0.1 * 5)


def test_datasets_with_an_ignore_label_train(nnunet_dirs):
    with_ignore = {**DATASET_JSON, "labels": {"background": 0, "organ": 1, "ignore": 2}}
    trainer = build(clef_trainer_class(), dataset_json=with_ignore)
    assert trainer.label_manager.has_ignore_label
    trainer.on_train_epoch_start()
    out = trainer.train_step(batch_for(trainer, label=2))
    assert all(np.isfinite(v) for v in out.values())


def test_nnunet_finds_the_trainer_and_its_variants(nnunet_dirs):
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    for name in ("nnUNetTrainerCLEFPretrain", "nnUNetTrainerCLEFPretrain_smoke", "nnUNetTrainerCLEFPretrain_50epochs"):
        assert recursive_find_trainer_class_by_name(name).__name__ == name
    smoke = build(recursive_find_trainer_class_by_name("nnUNetTrainerCLEFPretrain_smoke"), initialize=False)
    assert (smoke.num_epochs, smoke.num_iterations_per_epoch, smoke.num_val_iterations_per_epoch) == (1, 5, 2)


# --------------------------------------------------------------------------------------- DDP
DDP_STEPS = 3  # the last step only checks that DDP accepts it (it raises if a parameter went unused before)


def _clef_model():
    """The module the trainer wraps in DDP: U-Net (segmentation layers frozen) and the CLEF task."""
    from test_heads import plain_unet

    from nnunet_aux.heads import encoder_spec
    from nnunet_aux.training.tasks import CLEFTask, CLEFTrainingModel

    torch.manual_seed(0)
    net = plain_unet(features=(4, 8, 16))
    for p in net.decoder.seg_layers.parameters():
        p.requires_grad_(False)
    task = CLEFTask(encoder_spec(net), 1, (2.0, 1.5, 1.5), n_anchors=8, n_leaves=64)
    return CLEFTrainingModel(net, torch.nn.ModuleDict({"clef": task}))


def _clef_loss(model, x, seed):
    """``nnUNetTrainerCLEFPretrain._forward_and_losses`` on ``model`` (DDP-wrapped or not)."""
    from nnunet_aux.training.task import AuxBatch

    task = (model.module if hasattr(model, "module") else model).tasks["clef"]
    torch.manual_seed(seed)  # same T and voxel draws in every copy
    transform = task.sample_transform(x)
    outputs = model(x, transform.warp(x))
    terms = task.compute_losses({**outputs, "transform": transform}, AuxBatch(None, None, None, None, x))
    return sum(terms.values()), {k: v.detach() for k, v in terms.items()}


def _ddp_worker(rank, world, init_file, out_dir):
    import copy
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = _clef_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)  # find_unused_parameters=False, as nnU-Net
    opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=1e-3)
    record = []
    for step in range(DDP_STEPS):
        g = torch.Generator().manual_seed(100 * rank + step)
        x = torch.randn(2 if rank == 0 else 1, 1, 16, 16, 16, generator=g)  # rank 1 holds a single sample
        local = copy.deepcopy(model)
        opt.zero_grad()
        loss, terms = _clef_loss(ddp, x, step)
        loss.backward()
        if step == DDP_STEPS - 1:
            break
        local_loss, local_terms = _clef_loss(local, x, step)
        local_loss.backward()
        trained = [(n, p) for n, p in local.named_parameters() if p.requires_grad]
        local_grads = [p.grad.clone() for _, p in trained]
        for grad in local_grads:
            dist.all_reduce(grad)
            grad /= world
        record.append({"ddp": [p.grad.clone() for p in ddp.parameters() if p.requires_grad],
                       "avg_local": local_grads, "terms": terms, "local_terms": local_terms,
                       "missing": [n for n, p in ddp.named_parameters() if p.requires_grad and p.grad is None],
                       "seg_grads": [n for n, p in ddp.named_parameters() if "seg_layers" in n and p.grad is not None]})
        opt.step()
    torch.save(record, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes (mp.spawn)
def test_ddp_synchronises_the_unet_and_clef_heads(tmp_path):
    """Two gloo ranks (one with a single sample): every gradient is the ranks' average, no parameter unused."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert len(r0) == len(r1) == DDP_STEPS - 1
    for s0, s1 in zip(r0, r1):
        assert s0["missing"] == s1["missing"] == [] and s0["seg_grads"] == []
        for a, b, ref in zip(s0["ddp"], s1["ddp"], s0["avg_local"]):
            torch.testing.assert_close(a, b)
            torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)
        for s in (s0, s1):  # per-rank losses: each rank's terms are those of its own batch alone
            for k in ("decoding", "discriminative", "equivariance"):
                torch.testing.assert_close(s["terms"][k], s["local_terms"][k], rtol=1e-5, atol=1e-6)
