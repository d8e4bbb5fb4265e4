"""Every trainer with the planners and configurations users run: plan -> train -> predict (issue #7).

One tiny synthetic scale-decomposed dataset (4 training cases of 16x32x32 voxels, one test
case) is planned once with nnU-Net's default planner and with the ResEnc M preset
(``nnUNetPlannerResEncM`` -> ``nnUNetResEncUNetMPlans``, a ``ResidualEncoderUNet``) and
preprocessed once for ``3d_fullres`` and ``2d`` (the ResEnc presets reuse the default
preprocessed data). Every test trains a ``_smoke`` variant in this process (nnU-Net's
``get_trainer_from_args`` and ``run_training``, what ``nnUNetv2_train`` runs), predicts the
test case with nnU-Net's own ``nnUNetPredictor`` and checks

* that the auxiliary parts were built from the plan's network (class, 2D or 3D, norm,
  non-linearity, the main decoder's stages),
* parity: the checkpoint's ``network_weights`` load strictly into the stock network that
  ``nnUNetTrainer.build_network_architecture`` builds from the plan, and inference uses
  nnU-Net's own network builder,
* the logged auxiliary loss terms are finite, the prediction has the image's shape and the
  dataset's label values,
* resume: what ``--c`` does restores the heads, their optimizer state and the epoch.

Besides the trainer x plans x configuration matrix: ``3d_lowres`` -> ``3d_cascade_fullres``
(lowres and cascade added to the plans by hand, as nnU-Net only plans a lowres stage for
large images) and a dataset with an ignore label, a second foreground class and two input
channels, on which ignored voxels are checked to get no gradient from any auxiliary loss.

The subprocess route (``nnUNetv2_train`` / ``nnUNetv2_predict``) is covered by the
end-to-end tests of each trainer; here everything runs in-process so that the matrix fits
the CI budget. Threads are limited to one: on a shared 2-core machine a second OpenMP
thread makes these tiny convolutions ten times slower, not faster.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from nnunet_helpers import nnunet_env, run, shrink_plans, write_splits
from torch import nn
from torch.nn.modules.conv import _ConvNd

MATRIX_ID, IGNORE_ID = 993, 994
PLANS = ("nnUNetPlans", "nnUNetResEncUNetMPlans")
NETWORK_CLASS = {"nnUNetPlans": "PlainConvUNet", "nnUNetResEncUNetMPlans": "ResidualEncoderUNet"}
CONFIGURATIONS = ("3d_fullres", "2d")
#: every trainer of the package (``ScaleContrastiveHard`` differs from ``ScaleContrastive`` only in
#: how anchors are drawn) and the auxiliary tasks it must have built
TRAINERS = {
    "nnUNetTrainerScaleAux": {"scale"},
    "nnUNetTrainerScaleContrastive": {"scale"},
    "nnUNetTrainerScaleContrastiveLite": {"scale"},
    "nnUNetTrainerClsAux": {"cls"},
    "nnUNetTrainerClsAuxPretrain": {"cls"},
    "nnUNetTrainerVoxelSimSiam": {"simsiam"},
    "nnUNetTrainerCLEFPretrain": {"clef"},
    "nnUNetTrainerScaleContrastiveSimSiam": {"scale", "simsiam"},
    "nnUNetTrainerScaleContrastiveCls": {"scale", "cls"},
    "nnUNetTrainerSkeletonRecall": {"skeleton_recall"},
    "nnUNetTrainerSoftClDice": {"cldice"},
}
#: compositions checked on the ignore-label dataset only (each is its parts, which the whole matrix covers)
IGNORE_ONLY_TRAINERS = {"nnUNetTrainerScaleContrastiveSkeletonRecall": {"scale", "skeleton_recall"}}
CASCADE_TRAINER = "nnUNetTrainerScaleContrastiveSimSiam"
#: label values a prediction may hold: vessel (regions_class_order 1) and tumour (4)
PREDICTED_LABELS = {0, 1, 4}
IGNORE_LABEL = 5

pytestmark = pytest.mark.slow  # every test uses the matrix fixture (nnUNetv2_plan_and_preprocess); most train


# ---------------------------------------------------------------------------------------------- fixtures
def write_ignore_variant(source: Path, dataset_id: int) -> Path:
    """A copy of ``source`` with an ignore label over a third of every volume and a second input channel.

    The vessel scales (1-3) and the tumour (4) stay where they are outside the ignored slab,
    so the dataset has the scale regions, a second foreground class, nnU-Net's ``ignore``
    label (the highest label, as nnU-Net requires) and two channels.
    """
    target = source.parent / f"Dataset{dataset_id:03d}_SyntheticVesselsIgnore"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (target / sub).mkdir(parents=True)
    for sub in ("imagesTr", "imagesTs"):
        for f in sorted((source / sub).glob("*_0000.nii.gz")):
            shutil.copy(f, target / sub / f.name)
            image = sitk.ReadImage(str(f))
            # a second, differently normalised channel: the image's gradient magnitude
            second = sitk.GradientMagnitude(sitk.Cast(image, sitk.sitkFloat32))
            second.CopyInformation(image)
            sitk.WriteImage(second, str(target / sub / f.name.replace("_0000.", "_0001.")))
    for sub in ("labelsTr", "labelsTs"):
        for f in sorted((source / sub).glob("*.nii.gz")):
            label = sitk.ReadImage(str(f))
            array = sitk.GetArrayFromImage(label)
            array[:, :, : array.shape[2] // 3] = IGNORE_LABEL
            out = sitk.GetImageFromArray(array)
            out.CopyInformation(label)
            sitk.WriteImage(out, str(target / sub / f.name))
    dataset_json = json.loads((source / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["channel_names"] = {"0": "CT", "1": "gradient"}
    dataset_json["labels"]["ignore"] = IGNORE_LABEL
    dataset_json["name"] = target.name[len("Dataset000_"):]
    (target / "dataset.json").write_text(json.dumps(dataset_json, indent=1), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Both datasets planned (default and ResEnc M plans) and preprocessed once; nnU-Net pointed at them."""
    from nnunet_aux.conversion import write_synthetic_dataset
    from nnunet_aux.training.progress import AuxLocalLogger

    root = tmp_path_factory.mktemp("matrix")
    env = nnunet_env(root, OMP_NUM_THREADS="1")
    raw = write_synthetic_dataset(MATRIX_ID, n_train=4, n_test=1, shape=(16, 32, 32), spacing=(1.5, 1.0, 1.0),
                                  seed=3, raw_root=env["nnUNet_raw"], true_scales=True, progress=False)
    ignore_raw = write_ignore_variant(raw, IGNORE_ID)
    run(["nnUNetv2_plan_and_preprocess", "-d", MATRIX_ID, IGNORE_ID, "-c", "3d_fullres", "2d", "-np", "1",
         "-npfp", "1", "--verify_dataset_integrity"], env)
    # the ResEnc presets reuse the default plans' preprocessed 2d and 3d_fullres data: planning is enough
    run(["nnUNetv2_plan_experiment", "-d", MATRIX_ID, "-pl", "nnUNetPlannerResEncM"], env)
    datasets = {}
    for dataset_id, folder in ((MATRIX_ID, raw), (IGNORE_ID, ignore_raw)):
        pre = Path(env["nnUNet_preprocessed"]) / folder.name
        for plans in PLANS:
            if (pre / f"{plans}.json").is_file():
                shrink_plans(pre, plans=plans, batch_size=2)
        cases = sorted(p.name[:-len(".nii.gz")] for p in (folder / "labelsTr").glob("*.nii.gz"))
        write_splits(pre, cases[:-1], cases[-1:])
        datasets[dataset_id] = {"raw": folder, "preprocessed": pre,
                                "results": Path(env["nnUNet_results"]) / folder.name}
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer", "nnUNet_compile"):
            mp.setenv(key, env[key])
        # augmentation in this process (nnU-Net's planner needs at least 1 here, hence not in env)
        mp.setenv("nnUNet_n_proc_DA", "0")
        # nnU-Net's 30 x 54 inch progress plot (and our panel) costs seconds per training and is
        # tested by the end-to-end tests; the matrix does not need it
        mp.setattr(AuxLocalLogger, "plot_progress_png", lambda self, output_folder: None)
        torch.set_num_threads(1)
        try:
            yield {"env": env, "datasets": datasets}
        finally:
            torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------- helpers
def train(dataset_id: int, configuration: str, trainer_name: str, plans: str, fold="0"):
    """What ``nnUNetv2_train ID CONFIG FOLD -tr TRAINER -p PLANS -device cpu`` runs, without the final validation."""
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(dataset_id), configuration, fold if fold == "all" else int(fold),
                                    trainer_name, plans, device=torch.device("cpu"))
    trainer.run_training()
    return trainer


def checkpoint_of(trainer) -> dict:
    return torch.load(Path(trainer.output_folder) / "checkpoint_final.pth", map_location="cpu", weights_only=False)


def stock_network(trainer) -> nn.Module:
    """The network stock ``nnUNetTrainer`` builds from the trainer's plan, for inference."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    return nnUNetTrainer.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, trainer.num_input_channels,
        trainer.label_manager.num_segmentation_heads, enable_deep_supervision=False)


def check_built_from_plan(trainer, network_class: str, ndim: int) -> None:
    """The network is the plan's; every auxiliary convolution, norm and non-linearity is the plan's kind."""
    from nnunet_aux.heads import AuxiliaryDecoder, ClassificationHead

    network = trainer.network
    assert type(network).__name__ == network_class
    arch = trainer.configuration_manager.network_arch_init_kwargs
    convs = {type(m).__name__ for m in trainer.aux_tasks.modules() if isinstance(m, _ConvNd)}
    assert all(name.endswith(f"{ndim}d") for name in convs), convs
    heads = [m for m in trainer.aux_tasks.modules() if isinstance(m, ClassificationHead)]
    assert all(h.fc.in_features == arch["features_per_stage"][-1] for h in heads)  # reads the bottleneck
    if "clef" in trainer.aux_tasks:  # CLEF's decoding head reconstructs every input channel
        assert trainer.aux_tasks["clef"].head.decoding_head[-1].out_channels == trainer.num_input_channels
    norms = {f"{type(m).__module__}.{type(m).__name__}" for m in trainer.aux_tasks.modules()
             if "norm" in type(m).__module__}
    assert norms <= {arch["norm_op"]}, (norms, arch["norm_op"])
    nonlins = {f"torch.nn.{type(m).__name__}" for m in trainer.aux_tasks.modules()
               if type(m).__module__ == "torch.nn.modules.activation"}
    assert nonlins <= {arch["nonlin"]}, (nonlins, arch["nonlin"])
    main = {k: v.shape for k, v in network.decoder.state_dict().items()
            if not k.startswith(("encoder.", "seg_layers."))}
    decoders = [m for m in trainer.aux_tasks.modules() if isinstance(m, AuxiliaryDecoder)]
    assert len(decoders) == (3 if "scale" in trainer.aux_tasks else 0)
    stages = getattr(trainer, "scale_decoder_stages", None)
    stages = list(stages) if isinstance(stages, (list, tuple)) else [stages] * len(decoders)
    for decoder, kept_setting in zip(decoders, stages):
        assert decoder.num_stages == len(network.decoder.stages) + (kept_setting or 0)
    for decoder in decoders:
        own = {k[len("decoder."):]: v.shape for k, v in decoder.state_dict().items()
               if k.startswith("decoder.") and not k.startswith("decoder.seg_layers.")}
        # the main decoder's layers of the stages this decoder keeps (all, or all but the full-resolution one)
        kept = {k: v for k, v in main.items() if int(k.split(".")[1]) < decoder.num_stages}
        if decoder.width == 1:
            assert own == kept and decoder.skip_reduction is None
        else:  # a light decoder: the same layers, each at most as wide, and a reduction per skip it reads
            assert own.keys() == kept.keys()
            assert all(len(own[k]) == len(kept[k]) and all(a <= b for a, b in zip(own[k], kept[k])) for k in own)
            assert any(own[k] != kept[k] for k in own)
            assert len(decoder.skip_reduction.reductions) == decoder.num_stages + 1


def check_checkpoint(trainer, tasks) -> dict:
    """Stock network weights (strict load), the tasks' settings, finite logged loss terms."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    ckpt = checkpoint_of(trainer)
    stock_network(trainer).load_state_dict(ckpt["network_weights"])  # strict: exactly the stock network
    # inference (nnUNetv2_predict, nnU-Net's final validation) builds the network with nnU-Net's own builder
    assert type(trainer).build_network_architecture is nnUNetTrainer.build_network_architecture
    aux = ckpt["aux_state"]
    assert set(aux["hyperparameters"]) == tasks
    has_parameters = any(True for _ in trainer.aux_tasks.parameters())  # Skeleton Recall and clDice have none
    assert bool(aux["task_weights"]) == has_parameters and not any(".encoder." in k for k in aux["task_weights"])
    terms = [key for task in trainer.aux_tasks.values() for key in task.loss_weights()]
    for term in terms:
        for split in ("train", "val"):
            values = ckpt["logging"][f"{split}_loss_{term}"]
            assert values and np.all(np.isfinite(values)), (split, term, values)
    return ckpt


def predict(trainer, images: Path, output: Path, previous_stage: Path = None) -> Dict[str, np.ndarray]:
    """``nnUNetv2_predict`` of ``images`` with the trained fold, in-process; returns label arrays by file."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(trainer.output_folder_base, (trainer.fold,),
                                                   "checkpoint_final.pth")
    assert type(predictor.network).__name__ == type(trainer.network).__name__
    output.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(str(images), str(output),
                                            folder_with_segs_from_prev_stage=None if previous_stage is None
                                            else str(previous_stage))
    return {f.name: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in sorted(output.glob("*.nii.gz"))}


def check_prediction(trainer, raw: Path, output: Path, previous_stage: Path = None) -> None:
    """Predict the test cases: one label map per case, of the image's shape, with the dataset's label values."""
    predictions = predict(trainer, raw / "imagesTs", output, previous_stage)
    image_files = sorted((raw / "imagesTs").glob("*_0000.nii.gz"))
    assert sorted(predictions) == [f.name.replace("_0000.", ".") for f in image_files]
    for f in image_files:
        pred = predictions[f.name.replace("_0000.", ".")]
        assert pred.shape == sitk.GetArrayFromImage(sitk.ReadImage(str(f))).shape
        assert set(np.unique(pred).tolist()) <= PREDICTED_LABELS


def check_resume(trainer, ckpt: dict) -> None:
    """``--c``: a new trainer restores the heads, their optimizer group's momentum and the epoch."""
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    fresh = get_trainer_from_args(trainer.plans_manager.dataset_name, trainer.configuration_name, trainer.fold,
                                  type(trainer).__name__, trainer.plans_manager.plans_name,
                                  continue_training=True, device=torch.device("cpu"))
    maybe_load_checkpoint(fresh, True, False, None)
    assert fresh.current_epoch == ckpt["current_epoch"]
    restored = fresh.aux_tasks.state_dict()
    for k, v in ckpt["aux_state"]["task_weights"].items():
        torch.testing.assert_close(restored[k], v, rtol=0, atol=0)
    state = fresh.optimizer.state_dict()
    has_parameters = any(True for _ in fresh.aux_tasks.parameters())
    assert len(state["param_groups"]) == (2 if has_parameters else 1)
    saved = ckpt["optimizer_state"]["state"]
    for i in (state["param_groups"][1]["params"] if has_parameters else []):
        if i in saved:
            torch.testing.assert_close(state["state"][i]["momentum_buffer"], saved[i]["momentum_buffer"])


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("configuration", CONFIGURATIONS)
@pytest.mark.parametrize("plans", PLANS)
@pytest.mark.parametrize("trainer_name", list(TRAINERS))
def test_plan_train_predict_resume(matrix, trainer_name, plans, configuration, tmp_path):
    trainer = train(MATRIX_ID, configuration, f"{trainer_name}_smoke", plans)
    check_built_from_plan(trainer, NETWORK_CLASS[plans], 3 if configuration.startswith("3d") else 2)
    ckpt = check_checkpoint(trainer, TRAINERS[trainer_name])
    check_prediction(trainer, matrix["datasets"][MATRIX_ID]["raw"], tmp_path / "pred")
    check_resume(trainer, ckpt)


#: outputs that auxiliary losses read voxel by voxel, per task (SimSiam's z passes through the
#: prediction MLP's instance norm into p, so its gradient mixes voxels: p is what the loss reads)
DENSE_OUTPUTS = {"scale": ("logits", "embeddings"), "simsiam": ("p",), "skeleton_recall": ("logits",),
                 "cldice": ("logits",)}


def _tensors(value) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    return [t for v in value for t in _tensors(v)]


def _valid_at(valid, shape) -> torch.Tensor:
    """The valid mask at ``shape``: its deep-supervision level, else nearest-downsampled as the tasks do."""
    levels = list(valid) if isinstance(valid, (list, tuple)) else [valid]
    for level in levels:
        if tuple(level.shape[2:]) == tuple(shape):
            return level.bool()
    return F.interpolate(levels[-1].float(), size=tuple(shape), mode="nearest-exact") > 0.5


def spy_on_ignored_voxels(trainer) -> Dict[str, int]:
    """Wrap every task's ``compute_losses``: it must be given the valid mask, and in training steps the
    gradient of its losses must be exactly zero at every ignored voxel of every dense output."""
    seen = {"valid_masks": 0, "ignored_voxels": 0, "dense_outputs": 0, "with_gradient": 0}

    def wrap(name, task):
        original = task.compute_losses

        def compute_losses(outputs, batch):
            losses = original(outputs, batch)
            if name == "clef":  # self-supervised: reads no labels at all, so nothing to ignore
                assert batch.targets is None and batch.main_target is None
                return losses
            assert batch.valid is not None, f"{name} was not told which voxels are ignored"
            seen["valid_masks"] += 1
            tensors = [t for key in DENSE_OUTPUTS.get(name, ()) for t in _tensors(outputs[key]) if t.requires_grad]
            if not tensors or not torch.is_grad_enabled():
                return losses
            grads = torch.autograd.grad(sum(losses.values()), tensors, retain_graph=True, allow_unused=True)
            for tensor, grad in zip(tensors, grads):
                ignored = ~_valid_at(batch.valid, tensor.shape[2:])[:, 0]
                seen["ignored_voxels"] += int(ignored.sum())
                seen["dense_outputs"] += 1
                if grad is not None:
                    leak = grad.abs().amax(1)[ignored]
                    assert leak.numel() == 0 or float(leak.max()) == 0, f"{name}: an ignored voxel gets a gradient"
                    seen["with_gradient"] += int(bool((grad.abs().amax(1)[~ignored] > 0).any()))
            return losses

        task.compute_losses = compute_losses

    for name, task in trainer.aux_tasks.items():
        wrap(name, task)
    return seen


@pytest.mark.parametrize("trainer_name", list(TRAINERS) + list(IGNORE_ONLY_TRAINERS))
def test_ignore_label_second_class_and_two_channels(matrix, trainer_name, tmp_path):
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(IGNORE_ID), "3d_fullres", 0, f"{trainer_name}_smoke", "nnUNetPlans",
                                    device=torch.device("cpu"))
    if hasattr(trainer, "simsiam_include_background"):
        # ignored voxels fall in no region, i.e. look like background: sampling background too, SimSiam
        # would draw them if it did not honour the valid mask
        trainer.simsiam_include_background = True
    trainer.initialize()
    assert trainer.label_manager.ignore_label == IGNORE_LABEL and trainer.num_input_channels == 2
    seen = spy_on_ignored_voxels(trainer)
    trainer.run_training()
    tasks = {**TRAINERS, **IGNORE_ONLY_TRAINERS}[trainer_name]
    if tasks != {"clef"}:
        assert seen["valid_masks"] > 0
    if tasks & set(DENSE_OUTPUTS):
        # the check saw ignored voxels, and gradients elsewhere
        assert seen["dense_outputs"] > 0 and seen["ignored_voxels"] > 0 and seen["with_gradient"] > 0
    check_built_from_plan(trainer, "PlainConvUNet", 3)
    ckpt = check_checkpoint(trainer, tasks)
    check_prediction(trainer, matrix["datasets"][IGNORE_ID]["raw"], tmp_path / "pred")  # never the ignore label
    check_resume(trainer, ckpt)


def add_lowres_and_cascade(preprocessed: Path, plans: str = "nnUNetPlans") -> None:
    """Add ``3d_lowres`` (twice the spacing, half the patch) and ``3d_cascade_fullres`` to a plans file.

    nnU-Net plans a lowres stage only when the fullres patch covers less than a quarter of
    the median image; editing the plans file, as nnU-Net's documentation describes, gives
    tiny images the same two configurations.
    """
    path = preprocessed / f"{plans}.json"
    p = json.loads(path.read_text(encoding="utf-8"))
    fullres = p["configurations"]["3d_fullres"]
    p["configurations"]["3d_lowres"] = {
        "inherits_from": "3d_fullres", "data_identifier": f"{plans}_3d_lowres",
        "spacing": [2 * s for s in fullres["spacing"]], "patch_size": [s // 2 for s in fullres["patch_size"]],
        "median_image_size_in_voxels": [s / 2 for s in fullres["median_image_size_in_voxels"]],
        "batch_dice": False, "next_stage": "3d_cascade_fullres"}
    p["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    path.write_text(json.dumps(p, indent=1), encoding="utf-8")


# the slowest test of the matrix (two plans stages, three trainings, nnU-Net's validation)
def test_lowres_then_cascade(matrix, tmp_path, monkeypatch):
    """3d_lowres trains and writes the next stage's inputs; 3d_cascade_fullres trains on them (one more
    input channel per foreground label) and predicts from lowres predictions; CLEF pretrains on it too."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    dataset = matrix["datasets"][MATRIX_ID]
    add_lowres_and_cascade(dataset["preprocessed"])
    run(["nnUNetv2_preprocess", "-d", MATRIX_ID, "-c", "3d_lowres", "-np", "1"], matrix["env"])
    # fold 'all' validates on every training case, so the cascade gets an input for each of them;
    # one export worker instead of nnU-Net's eight spawned processes
    monkeypatch.setattr(trainer_module, "default_num_processes", 1)
    name = f"{CASCADE_TRAINER}_smoke"
    lowres = train(MATRIX_ID, "3d_lowres", name, "nnUNetPlans", fold="all")
    lowres.perform_actual_validation(False)
    next_stage = Path(lowres.output_folder_base) / "predicted_next_stage" / "3d_cascade_fullres"
    cases = sorted(p.name[:-len(".nii.gz")] for p in (dataset["raw"] / "labelsTr").glob("*.nii.gz"))
    assert sorted(p.name.split(".")[0] for p in next_stage.glob("*.b2nd")) == cases
    check_checkpoint(lowres, TRAINERS[CASCADE_TRAINER])

    cascade = train(MATRIX_ID, "3d_cascade_fullres", name, "nnUNetPlans")
    n_foreground = len(cascade.label_manager.foreground_labels)
    assert cascade.is_cascaded and cascade.num_input_channels == 1 + n_foreground
    check_built_from_plan(cascade, "PlainConvUNet", 3)
    ckpt = check_checkpoint(cascade, TRAINERS[CASCADE_TRAINER])
    lowres_predictions = tmp_path / "lowres"
    check_prediction(lowres, dataset["raw"], lowres_predictions)
    check_prediction(cascade, dataset["raw"], tmp_path / "cascade", previous_stage=lowres_predictions)
    check_resume(cascade, ckpt)

    # CLEF writes no lowres predictions of its own (it segments nothing): give it those of the other trainer
    clef = "nnUNetTrainerCLEFPretrain_smoke"
    shutil.copytree(next_stage, dataset["results"] / f"{clef}__nnUNetPlans__3d_lowres" / "predicted_next_stage" /
                    "3d_cascade_fullres")
    pretrained = train(MATRIX_ID, "3d_cascade_fullres", clef, "nnUNetPlans")
    head = pretrained.aux_tasks["clef"].head
    assert head.decoding_head[-1].out_channels == 1 + n_foreground  # it reconstructs the whole input
    check_checkpoint(pretrained, {"clef"})


def test_a_network_without_unet_structure_gets_a_clear_error(matrix):
    """A plan whose network has no nnU-Net encoder/decoder: the error names the class and what is missing."""
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(MATRIX_ID), "2d", 0, "nnUNetTrainerVoxelSimSiam_smoke", "nnUNetPlans",
                                    device=torch.device("cpu"))
    build = trainer.build_network_architecture

    def encoder_only(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                     enable_deep_supervision=True):
        # what a plan naming another architecture would give: here the U-Net's encoder alone
        return build(plans_manager, configuration_manager, num_input_channels, num_output_channels,
                     enable_deep_supervision).encoder

    trainer.build_network_architecture = encoder_only
    with pytest.raises(TypeError, match="cannot extend network class PlainConvEncoder: it needs the 'encoder' "
                                        "and 'decoder' attributes"):
        trainer.initialize()
