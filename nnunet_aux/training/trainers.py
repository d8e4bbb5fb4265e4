"""The concrete trainers users name with ``-tr``: every family, and their combinations.

nnU-Net finds them through :mod:`nnunet_aux.trainer_path`, which re-exports this module.
Each family lives in its own module, as nnU-Net groups its variants:

=========================================  ================================================
Sadikine et al. (scale decoders)           :mod:`.scale_trainers`: ``nnUNetTrainerScaleAux``,
                                           ``...ScaleContrastive``, ``...Hard``, ``...Lite``
CMU-Net (presence classification)          :mod:`.classification_trainers`:
                                           ``nnUNetTrainerClsAux``, ``...ClsAuxPretrain``
Lee et al. (voxel-level SimSiam)           :mod:`.simsiam_trainers`: ``nnUNetTrainerVoxelSimSiam``
CLEF (self-supervised pretraining)         :mod:`.clef_trainers`: ``nnUNetTrainerCLEFPretrain``
                                           (then fine-tune with any trainer and
                                           ``-pretrained_weights``)
Skeleton Recall, soft-clDice               :mod:`.thin_structure_trainers`
=========================================  ================================================

Combinations (defined here):

=========================================  ================================================
scale contrastive + SimSiam                ``nnUNetTrainerScaleContrastiveSimSiam``
scale contrastive + classification         ``nnUNetTrainerScaleContrastiveCls``
scale contrastive + Skeleton Recall        ``nnUNetTrainerScaleContrastiveSkeletonRecall``
light scale decoders + Skeleton Recall     ``nnUNetTrainerScaleContrastiveLiteSkeletonRecall``
scale contrastive + cbDice                 ``nnUNetTrainerScaleContrastiveCbDice``
=========================================  ================================================

Every trainer has ``_smoke`` and ``_<X>epochs`` variants (:mod:`.variants`), the way to set a
training's length. A new trainer needs an entry in :mod:`.registry` (``nnunet_aux trainers`` and
the README's table; the command fails without one).
"""

from __future__ import annotations

from . import classification_trainers, clef_trainers, scale_trainers, simsiam_trainers, thin_structure_trainers
from .base import nnUNetTrainerAux
from .classification_trainers import *  # noqa: F401,F403
from .classification_trainers import nnUNetTrainerClsAux
from .clef_trainers import *  # noqa: F401,F403
from .scale_trainers import *  # noqa: F401,F403
from .scale_trainers import nnUNetTrainerScaleContrastive, nnUNetTrainerScaleContrastiveLite
from .simsiam_trainers import *  # noqa: F401,F403
from .simsiam_trainers import nnUNetTrainerVoxelSimSiam
from .thin_structure_trainers import *  # noqa: F401,F403
from .thin_structure_trainers import nnUNetTrainerCbDice, nnUNetTrainerSkeletonRecall
from .variants import add_variants


class nnUNetTrainerScaleContrastiveSimSiam(nnUNetTrainerScaleContrastive, nnUNetTrainerVoxelSimSiam):
    """Scale decoders with the scale contrastive loss, plus voxel-level SimSiam on the encoder."""


class nnUNetTrainerScaleContrastiveCls(nnUNetTrainerScaleContrastive, nnUNetTrainerClsAux):
    """Scale decoders with the scale contrastive loss, plus the CMU-Net presence classifier."""


class nnUNetTrainerScaleContrastiveSkeletonRecall(nnUNetTrainerScaleContrastive, nnUNetTrainerSkeletonRecall):
    """Scale decoders with the scale contrastive loss, plus Skeleton Recall on the main output (issue #11)."""


class nnUNetTrainerScaleContrastiveLiteSkeletonRecall(nnUNetTrainerScaleContrastiveLite, nnUNetTrainerSkeletonRecall):
    """Light scale decoders with the scale contrastive loss, plus Skeleton Recall on the main output (issue #11)."""


class nnUNetTrainerScaleContrastiveCbDice(nnUNetTrainerScaleContrastive, nnUNetTrainerCbDice):
    """Scale decoders with the scale contrastive loss, plus cbDice on the main output (issue #26)."""


__all__ = ["nnUNetTrainerAux", "nnUNetTrainerScaleContrastiveSimSiam", "nnUNetTrainerScaleContrastiveCls",
           "nnUNetTrainerScaleContrastiveSkeletonRecall", "nnUNetTrainerScaleContrastiveLiteSkeletonRecall",
           "nnUNetTrainerScaleContrastiveCbDice"]
add_variants(globals(), nnUNetTrainerScaleContrastiveSimSiam, nnUNetTrainerScaleContrastiveCls,
             nnUNetTrainerScaleContrastiveSkeletonRecall, nnUNetTrainerScaleContrastiveLiteSkeletonRecall,
             nnUNetTrainerScaleContrastiveCbDice)
for _family in (scale_trainers, classification_trainers, simsiam_trainers, clef_trainers, thin_structure_trainers):
    __all__ += _family.__all__
