"""The auxiliary-task trainer base: nnU-Net's trainer plus heads that live beside its network.

Everything nnU-Net must be told about the heads happens here, once:

* optimizer  -> :meth:`configure_optimizers` adds the heads as a parameter group of whatever
  optimizer the parent trainer builds (so variants with other optimizers compose);
* DDP        -> :meth:`initialize` wraps network *and* heads in one DDP module;
* compile    -> the same module is compiled when ``nnUNet_compile`` is on;
* targets    -> :meth:`get_training_transforms` / :meth:`get_validation_transforms` hand
  nnU-Net's region conversion the auxiliary regions too;
* checkpoint -> ``network_weights`` stay exactly nnU-Net's network; the heads, their
  settings and the trainer's hyperparameters go under ``aux_state``.

Inference never sees the heads: ``build_network_architecture`` is nnU-Net's, so
``nnUNetv2_predict`` works unchanged and costs what stock nnU-Net costs.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..heads import check_encoder_decoder, unwrap_network
from .model import AuxiliaryTrainingModel
from .online_dice import online_dice_counts
from .progress import AuxLocalLogger
from .seg_loss import build_region_loss
from .targets import AppendRegionChannelsTransform, TargetLayout
from .task import AuxBatch, AuxiliaryTask


class nnUNetTrainerAux(nnUNetTrainer):
    """Base of every nnunet_aux trainer. Subclasses add tasks in :meth:`build_aux_tasks`.

    Tasks compose through cooperative inheritance: each mixin's ``build_aux_tasks`` returns
    ``super().build_aux_tasks() + [its task]``, and its hyperparameters are attributes set
    in its ``__init__``, as in nnU-Net.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.aux_tasks: Optional[nn.ModuleDict] = None
        self.training_model: Optional[nn.Module] = None
        self._target_layout: Optional[TargetLayout] = None
        self._aux_regions: list = []
        self._last_task_batches: list = []
        self._n_extra_channels = 0
        # nnU-Net's LocalLogger accepts a fixed set of keys; ours accepts the auxiliary terms too.
        old = self.logger.local_logger
        self.logger.local_logger = AuxLocalLogger(old.verbose)
        self.logger.local_logger.my_fantastic_logging.update(old.my_fantastic_logging)

    # ------------------------------------------------------------------ tasks
    def build_aux_tasks(self) -> List[AuxiliaryTask]:
        """The auxiliary tasks of this trainer, built from ``self.network`` and the plan."""
        return []

    def aux_hyperparameters(self) -> Dict[str, Any]:
        """All auxiliary settings, per task, as printed in the log and saved in checkpoints."""
        return {name: task.hyperparameters() for name, task in (self.aux_tasks or {}).items()}

    def _build_aux_tasks(self) -> None:
        network = check_encoder_decoder(self.network)
        tasks = self.build_aux_tasks()
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise RuntimeError(f"{type(self).__name__}: auxiliary task names must be unique, got {names}")
        self.aux_tasks = nn.ModuleDict({t.name: t for t in tasks}).to(self.device)
        lm = self.label_manager
        regions = [r for t in tasks for r in t.target_regions()]
        self._aux_regions = regions
        # channels the tasks compute themselves (e.g. skeletons) follow the region channels
        self._n_extra_channels = sum(t.extra_target_channels() for t in tasks)
        self._target_layout = TargetLayout(n_main=len(lm.foreground_regions) if lm.has_regions else 1,
                                           n_aux=len(regions) + self._n_extra_channels, has_regions=lm.has_regions,
                                           ignore_label=lm.ignore_label)
        self._unwrapped_network = network

    def deep_supervision_output_weights(self, levels: Optional[int] = None) -> Optional[List[float]]:
        """nnU-Net's weights of the deep-supervision outputs, highest resolution first; None without.

        The rule of ``nnUNetTrainer._build_loss`` (weights 1, 1/2, 1/4, ... with the lowest
        resolution left out, or 1e-6 under DDP without compile, where every output must be
        used), normalised to sum 1. ``levels``: the weights of a head with outputs at only the
        ``levels`` lowest resolutions (a decoder cut after its first stages), renormalised.
        """
        if not self.enable_deep_supervision:
            return None
        weights = np.array([1 / (2 ** i) for i in range(len(self._get_deep_supervision_scales()))])
        weights[-1] = 1e-6 if (self.is_ddp and not self._do_i_compile()) else 0
        if levels is not None:
            weights = weights[-levels:]
            if weights.sum() == 0:  # only nnU-Net's unweighted lowest level is left
                weights[:] = 1
        return list(weights / weights.sum())

    def make_region_loss(self, batch_dice: Optional[bool] = None, bce_pos_weight=None,
                         max_pos_weight: float = 50.0, levels: Optional[int] = None) -> nn.Module:
        """nnU-Net's region loss (Dice + BCE) with this trainer's deep supervision and ignore label.

        ``batch_dice`` (None: the plan's) and ``bce_pos_weight`` (None: unweighted BCE; a
        number; or ``'balanced'``, the batch's inverse foreground frequency capped at
        ``max_pos_weight``) let a task change what matters for rare targets. ``levels``: see
        :meth:`deep_supervision_output_weights`.
        """
        weights = self.deep_supervision_output_weights(levels)
        batch_dice = self.configuration_manager.batch_dice if batch_dice is None else batch_dice
        return build_region_loss(batch_dice, self.is_ddp, self.label_manager.ignore_label is not None, weights,
                                 compile_dice=self._do_i_compile(), bce_pos_weight=bce_pos_weight,
                                 max_pos_weight=max_pos_weight)

    # ------------------------------------------------------- nnU-Net hooks
    def configure_optimizers(self):
        # nnUNetTrainer.initialize calls this right after building (and compiling) the network:
        # the one place where the heads exist before the optimizer does.
        if self.aux_tasks is None:
            self._build_aux_tasks()
        optimizer, lr_scheduler = super().configure_optimizers()
        aux_params = [p for p in self.aux_tasks.parameters() if p.requires_grad]
        if aux_params:
            # add_param_group takes the optimizer's defaults (lr, momentum, weight decay), and
            # nnU-Net's PolyLRScheduler sets the lr of every group.
            optimizer.add_param_group({"params": aux_params})
        return optimizer, lr_scheduler

    def initialize(self):
        super().initialize()
        # nnU-Net wrapped only its network in DDP. Undo that and wrap network + heads together,
        # so that one reducer synchronises every gradient.
        if isinstance(self.network, DDP):
            self.network = self.network.module
        if self.is_ddp:
            self.aux_tasks = nn.SyncBatchNorm.convert_sync_batchnorm(self.aux_tasks)
        model = self._make_training_model(unwrap_network(self.network), self.aux_tasks)
        if self._do_i_compile():
            model = torch.compile(model)
        if self.is_ddp:
            model = DDP(model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
        self.training_model = model
        hp = {"trainer": type(self).__name__, "tasks": self.aux_hyperparameters(),
              "target_regions": [list(r) for r in self._aux_regions]}
        self.print_to_log_file("nnunet_aux settings:\n" + json.dumps(hp, indent=2, default=str),
                               also_print_to_console=True, add_timestamp=False)
        self.logger.update_config({"nnunet_aux": hp})

    def _make_training_model(self, network: nn.Module, tasks: nn.ModuleDict) -> nn.Module:
        """The module that training runs (and DDP and ``torch.compile`` wrap): network and heads."""
        return AuxiliaryTrainingModel(network, tasks)

    def set_deep_supervision_enabled(self, enabled: bool):
        unwrap_network(self.network).decoder.deep_supervision = enabled
        for task in (self.aux_tasks or {}).values():
            task.set_deep_supervision_enabled(enabled)

    def _task_target_transforms(self) -> list:
        """The tasks' own target transforms; each inserts its channels after the region channels, in task order."""
        first = self._target_layout.n_main + len(self._aux_regions)
        transforms = []
        for task in self.aux_tasks.values():
            transforms += task.target_transforms(first)
            first += task.extra_target_channels()
        return transforms

    def _insert_task_transforms(self, pipeline):
        """Put the tasks' target transforms into nnU-Net's pipeline before its deep-supervision downsampling."""
        if self._n_extra_channels:
            at = next((i for i, t in enumerate(pipeline.transforms) if isinstance(t, DownsampleSegForDSTransform)),
                      len(pipeline.transforms))
            pipeline.transforms[at:at] = self._task_target_transforms()
        return pipeline

    def _aux_target_transforms(self, deep_supervision_scales):
        extra = [AppendRegionChannelsTransform(self._aux_regions), *self._task_target_transforms()]
        if deep_supervision_scales is not None:
            extra.append(DownsampleSegForDSTransform(ds_scales=deep_supervision_scales))
        return extra

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        # An instance method overriding nnU-Net's static one: it needs the tasks' regions.
        if not self._aux_regions and not self._n_extra_channels:
            return super().get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales,
                                                   mirror_axes, do_dummy_2d_data_aug, use_mask_for_norm,
                                                   is_cascaded, foreground_labels, regions, ignore_label)
        if regions is not None:
            return self._insert_task_transforms(super().get_training_transforms(
                patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
                use_mask_for_norm, is_cascaded, foreground_labels, list(regions) + self._aux_regions, ignore_label))
        base = super().get_training_transforms(patch_size, rotation_for_DA, None, mirror_axes,
                                               do_dummy_2d_data_aug, use_mask_for_norm, is_cascaded,
                                               foreground_labels, None, ignore_label)
        return ComposeTransforms([base, *self._aux_target_transforms(deep_supervision_scales)])

    def get_validation_transforms(self, deep_supervision_scales, is_cascaded=False, foreground_labels=None,
                                  regions=None, ignore_label=None):
        if not self._aux_regions and not self._n_extra_channels:
            return super().get_validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels,
                                                     regions, ignore_label)
        if regions is not None:
            return self._insert_task_transforms(super().get_validation_transforms(
                deep_supervision_scales, is_cascaded, foreground_labels, list(regions) + self._aux_regions,
                ignore_label))
        base = super().get_validation_transforms(None, is_cascaded, foreground_labels, None, ignore_label)
        return ComposeTransforms([base, *self._aux_target_transforms(deep_supervision_scales)])

    # ------------------------------------------------------------- steps
    def _trainable_parameters(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _forward_and_losses(self, data, target) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], Any, Any]:
        main_target, aux_target, valid = self._target_layout.split_all(target)
        main_output, aux_outputs = self.training_model(data)
        self._last_task_batches = []
        terms = {"main": self.loss(main_output, main_target)}
        weights = {"main": 1.0}
        for (name, task), own in zip(self.aux_tasks.items(), self._targets_per_task(aux_target)):
            batch = AuxBatch(targets=own, valid=valid if self.label_manager.has_ignore_label else None,
                             main_output=main_output, main_target=main_target, data=data)
            if not self.training_model.training:  # kept for validation_counts
                self._last_task_batches.append((task, aux_outputs[name], batch))
            terms.update(task.compute_losses(aux_outputs[name], batch))
            weights.update(task.loss_weights())
        counted = self.counted_loss_terms(terms)
        total = sum(weights[k] * v for k, v in terms.items() if k in counted)
        if self.is_ddp and len(counted) < len(terms):
            # DDP (find_unused_parameters=False) needs a gradient for every parameter in every step
            total = total + sum(0.0 * v for k, v in terms.items() if k not in counted)
        return total, terms, main_output, main_target

    def counted_loss_terms(self, terms: Dict[str, torch.Tensor]) -> set:
        """Names of the loss terms that enter this step's total (each with its task's weight).

        All of them by default; a trainer with phases (classification pre-training, say)
        returns a subset. The others are still computed and logged.
        """
        return set(terms)

    def _targets_per_task(self, aux_target) -> List[Any]:
        """Each auxiliary task's own target channels (None for a task without target regions).

        ``aux_target`` holds the tasks' regions one after the other, in ``self.aux_tasks``
        order, then the tasks' extra channels in the same order (one tensor, or one per
        deep-supervision level). A task gets its regions followed by its extra channels.
        """
        targets, offset, extra = [], 0, len(self._aux_regions)
        for task in self.aux_tasks.values():
            n, m = len(task.target_regions()), task.extra_target_channels()
            spans = [s for s in ((offset, offset + n), (extra, extra + m)) if s[1] > s[0]]
            offset, extra = offset + n, extra + m

            def take(t, spans=spans):
                parts = [t[:, a:b] for a, b in spans]
                return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

            own = None
            if spans:
                own = [take(t) for t in aux_target] if isinstance(aux_target, list) else take(aux_target)
            targets.append(own)
        return targets

    def _to_device(self, batch):
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        if isinstance(target, list):
            target = [t.to(self.device, non_blocking=True) for t in target]
        else:
            target = target.to(self.device, non_blocking=True)
        return data, target

    def _autocast(self):
        # as nnU-Net: autocast only on CUDA (slow on CPU, unsupported on MPS)
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def train_step(self, batch: dict) -> dict:
        data, target = self._to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            total, terms, _, _ = self._forward_and_losses(data, target)
        params = self._trainable_parameters()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 12)
            self.optimizer.step()
        out = {"loss": total.detach().cpu().numpy()}
        out.update({f"loss_{k}": v.detach().float().cpu().numpy() for k, v in terms.items()})
        return out

    def validation_step(self, batch: dict) -> dict:
        data, target = self._to_device(batch)
        with self._autocast():
            total, terms, output, main_target = self._forward_and_losses(data, target)
        if self.enable_deep_supervision:
            output, main_target = output[0], main_target[0]
        out = online_dice_counts(output, main_target, self.label_manager)
        for task, task_outputs, task_batch in self._last_task_batches:
            for key, counts in task.validation_counts(task_outputs, task_batch).items():
                out[f"counts_{key}"] = counts.detach().double().cpu().numpy()
        self._last_task_batches = []
        out["loss"] = total.detach().cpu().numpy()
        out.update({f"loss_{k}": v.detach().float().cpu().numpy() for k, v in terms.items()})
        return out

    def _log_terms(self, outputs: List[dict], split: str) -> None:
        collated = collate_outputs(outputs)
        for key in [k for k in collated if k.startswith("loss_")]:
            value = np.mean(collated[key])
            self.log_epoch_value(f"{split}_{key}", float(np.mean(self.from_all_ranks(value))))

    def from_all_ranks(self, value: Any) -> list:
        """``value`` of every DDP process, in rank order (``[value]`` without DDP)."""
        if not self.is_ddp:
            return [value]
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, value)
        return gathered

    def log_epoch_value(self, key: str, value: Any) -> None:
        """Log this epoch's ``value`` of ``key`` (a key nnU-Net's logger does not know is added)."""
        self.logger.local_logger.add_keys([key])
        self.logger.log(key, value, self.current_epoch)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.training_model.train()

    def on_train_epoch_end(self, train_outputs: List[dict]):
        super().on_train_epoch_end(train_outputs)
        self._log_terms(train_outputs, "train")

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.training_model.eval()

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        super().on_validation_epoch_end(val_outputs)
        self._log_terms(val_outputs, "val")
        self._log_head_dice(val_outputs)

    def _log_head_dice(self, outputs: List[dict]) -> None:
        """``val_dice_<name>`` = 2 tp / (2 tp + fp + fn) of each auxiliary head on its own target.

        Counts a task gives at extra thresholds (keys ``<name>@<threshold>``) add
        ``val_dice_best_<name>``: the Dice at the threshold that is best for the whole
        validation epoch (one fixed threshold, as the ODS measure of edge detection scores
        class-weighted outputs; Arbelaez et al., TPAMI 2011).
        """
        keys = sorted({k for o in outputs for k in o if k.startswith("counts_")})
        if not keys:
            return
        dice, detail, candidates = {}, {}, {}
        for key in keys:
            counts = np.sum(self.from_all_ranks(np.sum([o[key] for o in outputs if key in o], 0)), 0)
            tp, fp, fn = (float(c) for c in counts)
            value = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else float("nan")
            name, _, threshold = key[len("counts_"):].partition("@")
            candidates.setdefault(name, []).append((value, threshold or "default threshold"))
            if not threshold:
                dice[name] = value
                # precision and recall say which way a weak head errs (a class-weighted loss over-segments)
                detail[name] = (tp / (tp + fp) if tp + fp > 0 else float("nan"),
                                tp / (tp + fn) if tp + fn > 0 else float("nan"))
        for name, value in dice.items():
            self.log_epoch_value(f"val_dice_{name}", value)
        best = {name: max(((v, t) for v, t in found if not np.isnan(v)), key=lambda vt: vt[0],
                          default=(float("nan"), "-"))  # ties: the first threshold in key order
                for name, found in candidates.items() if len(found) > 1}
        for name, (value, _) in best.items():
            self.log_epoch_value(f"val_dice_best_{name}", value)
        self.print_to_log_file("auxiliary heads' Dice (precision / recall) on their own targets (val): " +
                               ", ".join(f"{k} {v:.4f} ({detail[k][0]:.3f} / {detail[k][1]:.3f})"
                                         for k, v in dice.items()))
        if best:
            self.print_to_log_file("... at the best threshold of the epoch: " +
                                   ", ".join(f"{k} {v:.4f} ({t})" for k, (v, t) in best.items()))

    def _print_loss_terms(self) -> None:
        terms = [k for k in self.logger.local_logger.aux_keys() if k.startswith("train_loss_")]
        if terms:
            self.print_to_log_file("loss terms (train / val): " + ", ".join(
                f"{k[len('train_loss_'):]} {self.logger.get_value(k, step=-1):.4f} / "
                f"{self._last_or_nan('val' + k[len('train'):]):.4f}" for k in terms))

    def on_epoch_end(self):
        self._print_loss_terms()
        super().on_epoch_end()

    def _last_or_nan(self, key: str) -> float:
        values = self.logger.local_logger.my_fantastic_logging.get(key, [])
        return float(values[-1]) if values else float("nan")

    # -------------------------------------------------------- checkpoints
    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0:
            return
        if self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
            return
        checkpoint = {
            # exactly stock nnU-Net's keys; network_weights are the bare network's own
            "network_weights": unwrap_network(self.network).state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "grad_scaler_state": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "logging": self.logger.get_checkpoint(),
            "_best_ema": self._best_ema,
            "current_epoch": self.current_epoch + 1,
            "init_args": self.my_init_kwargs,
            "trainer_name": self.__class__.__name__,
            "inference_allowed_mirroring_axes": self.inference_allowed_mirroring_axes,
            "aux_state": {
                "task_weights": self.aux_tasks.state_dict(),
                "hyperparameters": self.aux_hyperparameters(),
                "target_regions": [list(r) for r in self._aux_regions],
            },
        }
        torch.save(checkpoint, filename)

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = torch.load(checkpoint, map_location=self.device, weights_only=False)
        network = unwrap_network(self.network)
        state = {(k[7:] if k.startswith("module.") and k not in network.state_dict() else k): v
                 for k, v in checkpoint["network_weights"].items()}
        network.load_state_dict(state)
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        aux = checkpoint.get("aux_state")
        if aux is not None:
            self.aux_tasks.load_state_dict(aux["task_weights"])
            self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        else:
            # e.g. --val on a checkpoint written by another trainer: the network is all inference needs
            self.print_to_log_file("WARNING: checkpoint has no auxiliary state; auxiliary heads and the "
                                   "optimizer keep their initial state.")
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
