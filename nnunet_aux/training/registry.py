"""Every trainer the package provides, in one place: ``nnunet_aux trainers`` and the README's table.

:data:`TRAINERS` describes the hand-written trainers (one line each, the paper and equation
they implement, what they need); their ``_smoke`` and ``_<X>epochs`` variants are generated
at import by :mod:`.variants` and read from :data:`.variants.GENERATED`, so they cannot go
out of date. :func:`check_registry` fails when a trainer class exists without an entry here.
:func:`markdown_table` is the README's table (``tests/test_trainers_command.py`` compares them).

Importing this module is cheap; :func:`trainer_listing` imports the trainers (nnU-Net, torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Group key -> heading, in the order listed.
FAMILIES: dict[str, str] = {
    "base": "Base class",
    "scale": "Scale decoders and the contrastive loss between scales (Sadikine et al. 2023)",
    "classification": "Presence classification (CMU-Net)",
    "simsiam": "Voxel-level SimSiam (Lee et al.)",
    "clef": "Self-supervised pretraining (CLEF)",
    "thin": "Thin-structure losses (Skeleton Recall, soft-clDice, cbDice)",
    "combination": "Combinations",
    "demo": "The demo's trainers (in nnunet_aux/demo/trainer_path, which `nnunet_aux demo` searches)",
}

#: Short name used in :attr:`TrainerInfo.implements` -> full reference.
PAPERS: dict[str, str] = {
    "Sadikine et al. 2023": "A. Sadikine et al., Scale-specific auxiliary multi-task contrastive learning for deep "
                            "liver vessel segmentation, ISBI 2023",
    "CMU-Net": "A. Moseley, A. Wang and A. A. Z. Imran, Context-aware multitasking for medical image segmentation",
    "Lee et al.": "C. E. Lee, M. Chung and Y.-G. Shin, Voxel-level Siamese representation learning for abdominal "
                  "multi-organ segmentation",
    "CLEF": "I. Kuleshov, M. Goncharov and V. Soboleva, CLEF: Contrastive learning of equivariant features in CT "
            "images, FLARE 2022",
    "Kirchhoff et al. 2024": "Y. Kirchhoff et al., Skeleton Recall Loss for connectivity conserving and resource "
                             "efficient segmentation of thin tubular structures, ECCV 2024, arXiv:2404.03010 "
                             "(code: skeleton-recall 1.0.0)",
    "Shit et al. 2021": "S. Shit, J. C. Paetzold et al., clDice - a novel topology-preserving loss function for "
                        "tubular structure segmentation, CVPR 2021, arXiv:2003.07311",
    "Shi et al. 2024": "P. Shi et al., Centerline Boundary Dice Loss for Vascular Segmentation, MICCAI 2024, "
                       "arXiv:2407.01517 (code: PengchengShi1220/cbDice)",
}

SCALE = "a scale-decomposed dataset"
ANY = "any dataset"


@dataclass(frozen=True)
class TrainerInfo:
    """One hand-written trainer.

    Attributes
    ----------
    name : str
        Class name, as given to ``nnUNetv2_train -tr``.
    family : str
        Key of :data:`FAMILIES`.
    description : str
        What it adds to nnU-Net, one line.
    implements : str
        Paper (a key of :data:`PAPERS`) and equation or part; ``-`` for none.
    needs : str
        The dataset it needs.
    see : str, optional
        README section (``[title](#anchor)``), shown in the README's table only.
    """

    name: str
    family: str
    description: str
    implements: str
    needs: str
    see: str = ""


TRAINERS: tuple[TrainerInfo, ...] = (
    TrainerInfo("nnUNetTrainerAux", "base", "nnU-Net's trainer with auxiliary heads beside its network, for "
                "subclasses; with no task it trains as nnUNetTrainer", "-", ANY),
    TrainerInfo("nnUNetTrainerScaleAux", "scale", "one auxiliary decoder D_s per vessel scale on nnU-Net's encoder, "
                "L = L_mt + sum_s lambda_s L_s (lambda_c = 0)", "Sadikine et al. 2023, Eq. 4-5", SCALE),
    TrainerInfo("nnUNetTrainerScaleContrastive", "scale", "as ScaleAux plus lambda_c L_c, the supervised "
                "contrastive loss between scales (lambda_c = 0.53, tau = 0.94)", "Sadikine et al. 2023, Eq. 4-9",
                SCALE),
    TrainerInfo("nnUNetTrainerScaleContrastiveHard", "scale", "as ScaleContrastive, contrastive anchors drawn "
                "hardest first", "Sadikine et al. 2023, Eq. 4-9", SCALE),
    TrainerInfo("nnUNetTrainerScaleContrastiveLite", "scale", "as ScaleContrastive with light scale decoders (1/4 "
                "width, skips through a 1x1x1 reduction, no full-resolution stage) and class-balanced BCE in L_s: "
                "1.15-1.22 x a stock step on the CPU instead of 3.4 x; on a GPU 2.2 x instead of 3.0 x",
                "Sadikine et al. 2023, Eq. 4-9", SCALE,
                "[light decoders](#light-scale-decoders-and-the-rare-scales)"),
    TrainerInfo("nnUNetTrainerClsAux", "classification", "presence classifier (global pooling + linear) on the "
                "bottleneck, focal loss, trained jointly", "CMU-Net, Sect. 2 (L = w_s L_seg + w_c L_cls)", ANY),
    TrainerInfo("nnUNetTrainerClsAuxPretrain", "classification", "CMU-Net's \"pre-trained U-Net\" baseline: "
                "classification pre-training of the encoder, then segmentation", "CMU-Net, Sect. 3", ANY),
    TrainerInfo("nnUNetTrainerVoxelSimSiam", "simsiam", "voxel-level SimSiam heads on the 3 deepest encoder "
                "stages, class-weighted, no negatives", "Lee et al., Eq. 4-8", ANY),
    TrainerInfo("nnUNetTrainerCLEFPretrain", "clef", "CLEF self-supervised pretraining (decoding, "
                "discriminativeness, equivariance losses); then fine-tune with -pretrained_weights",
                "CLEF, Sect. 2.2 (decoding loss, Eq. 1, Eq. 2)", "any images (labels unused)",
                "[CLEF](#self-supervised-pretraining-clef)"),
    TrainerInfo("nnUNetTrainerSkeletonRecall", "thin", "nnU-Net's loss + w (1 - soft recall of the prediction on "
                "the tubed skeleton of the foreground), at full resolution; skeletons made on the CPU in nnU-Net's "
                "augmentation workers; no network part",
                "Kirchhoff et al. 2024, Sect. 3.2", ANY,
                "[thin structures](#thin-structures-skeleton-recall-soft-cldice-and-cbdice)"),
    TrainerInfo("nnUNetTrainerSkeletonRecallDS", "thin", "as SkeletonRecall, recall at every deep-supervision level",
                "Kirchhoff et al. 2024, Sect. 3.2", ANY),
    TrainerInfo("nnUNetTrainerSoftClDice", "thin", "nnU-Net's loss + alpha (1 - soft-clDice) of the main output, "
                "as their code runs it (10 iterations, background included); no network part",
                "Shit et al. 2021, Alg. 1, Eq. 3-4", ANY),
    TrainerInfo("nnUNetTrainerCbDice", "thin", "2 CE + Dice + cbDice at every deep-supervision level (their "
                "nnUNetTrainer_CE_DC_CBDC), MONAI's distance transforms; no network part",
                "Shi et al. 2024, Eq. 3-5", ANY),
    TrainerInfo("nnUNetTrainerCbDiceNoDeepSupervision", "thin", "as CbDice without deep supervision: 3 CE + Dice + "
                "2 cbDice", "Shi et al. 2024, Eq. 3-5", ANY),
    TrainerInfo("nnUNetTrainerSkeletonRecallSoftClDice", "thin", "both thin-structure terms: Skeleton Recall and "
                "soft-clDice", "Kirchhoff et al. 2024, Sect. 3.2 + Shit et al. 2021, Eq. 3-4", ANY),
    TrainerInfo("nnUNetTrainerScaleContrastiveSimSiam", "combination", "ScaleContrastive plus voxel-level SimSiam "
                "on the encoder", "Sadikine et al. 2023, Eq. 4-9 + Lee et al., Eq. 4-8", SCALE),
    TrainerInfo("nnUNetTrainerScaleContrastiveCls", "combination", "ScaleContrastive plus the CMU-Net presence "
                "classifier", "Sadikine et al. 2023, Eq. 4-9 + CMU-Net, Sect. 2", SCALE),
    TrainerInfo("nnUNetTrainerScaleContrastiveSkeletonRecall", "combination", "ScaleContrastive plus Skeleton Recall "
                "on the main output", "Sadikine et al. 2023, Eq. 4-9 + Kirchhoff et al. 2024, Sect. 3.2", SCALE),
    TrainerInfo("nnUNetTrainerScaleContrastiveLiteSkeletonRecall", "combination", "ScaleContrastiveLite plus "
                "Skeleton Recall on the main output", "Sadikine et al. 2023, Eq. 4-9 + Kirchhoff et al. 2024, "
                "Sect. 3.2", SCALE),
    TrainerInfo("nnUNetTrainerScaleContrastiveCbDice", "combination", "ScaleContrastive plus cbDice on the main "
                "output", "Sadikine et al. 2023, Eq. 4-9 + Shi et al. 2024, Eq. 3-5", SCALE),
    TrainerInfo("nnUNetTrainer_demo", "demo", "stock nnUNetTrainer (the demo's binary baseline), its length from "
                "NNUNET_AUX_OUTCOME", "-", ANY),
    TrainerInfo("nnUNetTrainerScaleContrastiveLite_demo", "demo", "ScaleContrastiveLite, its length from "
                "NNUNET_AUX_OUTCOME", "Sadikine et al. 2023, Eq. 4-9", SCALE),
)


def trainer_listing() -> list[dict[str, Any]]:
    """Every trainer with its generated variants, in :data:`TRAINERS`' order (imports the trainers).

    Returns
    -------
    trainers : list of dict
        ``name``, ``family``, ``description``, ``implements``, ``needs``, ``search_path``
        (``"trainer-path"``: ``nnunet_aux trainer-path``; ``"demo"``: the demo's folder) and
        ``variants``: variant name -> the attributes it sets.
    """
    from .variants import GENERATED

    check_registry()
    return [{"name": t.name, "family": t.family, "description": t.description, "implements": t.implements,
             "needs": t.needs, "search_path": "demo" if t.family == "demo" else "trainer-path",
             "variants": {name: dict(attrs) for name, attrs in GENERATED.get(t.name, {}).items()}}
            for t in TRAINERS]


def provided_trainer_names() -> dict[str, list[str]]:
    """Class names of the trainers nnU-Net can find: ``{"trainer-path": [...], "demo": [...]}``.

    The names the two trainer folders export: :mod:`nnunet_aux.training.trainers` (re-exported by
    ``nnunet_aux/trainer_path``) and :mod:`nnunet_aux.demo.trainers` (``nnunet_aux/demo/trainer_path``).
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from ..demo import trainers as demo
    from . import trainers

    demo_names = [n for n, v in vars(demo).items() if isinstance(v, type) and issubclass(v, nnUNetTrainer)
                  and v.__module__ == demo.__name__]
    return {"trainer-path": list(trainers.__all__), "demo": demo_names}


def check_registry() -> None:
    """Raise ``RuntimeError`` unless :data:`TRAINERS` and the generated variants are exactly the provided trainers."""
    from .variants import GENERATED

    provided = provided_trainer_names()
    listed = {t.name for t in TRAINERS}
    listed |= {name for t in TRAINERS for name in GENERATED.get(t.name, {})}
    everything = set(provided["trainer-path"]) | set(provided["demo"])
    missing, stale = sorted(everything - listed), sorted(listed - everything)
    unknown_papers = sorted({t.implements for t in TRAINERS
                             if t.implements != "-" and not any(p in t.implements for p in PAPERS)})
    if missing or stale or unknown_papers or any(t.family not in FAMILIES for t in TRAINERS):
        raise RuntimeError(f"nnunet_aux.training.registry is out of date: trainers without an entry {missing}, "
                           f"entries without a trainer {stale}, unknown papers {unknown_papers}")
