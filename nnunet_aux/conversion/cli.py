"""Subcommands ``synth``, ``decompose``, ``multiclass``, ``convert`` and ``images-only`` of ``nnunet_aux``.

Heavy imports happen inside the ``run_*`` functions so that ``nnunet_aux -h`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable


class _Formatter(argparse.HelpFormatter):
    """Wraps description paragraphs (keeping the layout of the data-contract text) and shows defaults."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if "\n" in paragraph:  # laid out by hand
                paragraphs.append("\n".join(indent + line for line in paragraph.splitlines()))
            else:
                paragraphs.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        shown = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS)
        if shown and "%(default)" not in help_text:
            default = action.default
            if isinstance(default, (tuple, list)):
                default = " ".join(str(d) for d in default)
            help_text += f" (default: {default})"
        return help_text


_DATA_CONTRACT = """\
Output: a dataset in nnU-Net raw format whose label maps carry the vessel scales
(1 = small ... S = large), other structures after them; dataset.json declares the whole
vessel tree as an nnU-Net region ("vessel": [1, 2, 3]) and the scales under "scales".
Predictions write each region with a value inside it (vessel 1, tumour S+1), so that
nnU-Net's own evaluation reads them right; `nnunet_aux map-labels` gives the source's
values back. A report, scale_decomposition_report.json, lies beside dataset.json.
Existing datasets with the same ID are never replaced without --overwrite. Next step:
  nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres --verify_dataset_integrity"""


def _default_processes() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _add_common(parser: argparse.ArgumentParser, decomposition: bool = True) -> None:
    if decomposition:
        group = parser.add_argument_group("scale decomposition")
        group.add_argument("--n-scales", type=int, default=3, metavar="S",
                           help="number of vessel scales (labels 1..S, smallest first)")
        group.add_argument("--thresholds", choices=("quantile", "dataset", "fixed"), default="quantile",
                           help="radius thresholds between scales: 'quantile' = quantiles of each volume's "
                                "branch radii (the paper), 'dataset' = quantiles of all training volumes' "
                                "branch radii together, 'fixed' = the radii given with --fixed-radii")
        group.add_argument("--fixed-radii", type=float, nargs="+", default=None, metavar="MM",
                           help="S-1 increasing radius thresholds in mm, for --thresholds fixed")
        group.add_argument("--quantiles", type=float, nargs="+", default=None, metavar="Q",
                           help="S-1 quantile levels in (0, 1) for the quantile modes "
                                "")
        group.add_argument("--m-neighbours", type=int, default=8, metavar="M",
                           help="neighbouring centreline points per radius estimate (the paper's p)")
    group = parser.add_argument_group("output")
    group.add_argument("--raw-root", default=None, metavar="FOLDER",
                       help="nnU-Net raw data folder")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an existing dataset with the same ID (any name)")
    if decomposition:
        _add_num_processes(group, "worker processes, one case each")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_num_processes(container: argparse._ActionsContainer, help_text: str) -> None:
    """``-np``: worker processes (a parser or an argument group), by default one per CPU up to 8."""
    container.add_argument("-np", "--num-processes", type=int, default=_default_processes(), metavar="N",
                           help=help_text)


def _add_parser(subparsers: argparse._SubParsersAction, name: str,
                func: Callable[[argparse.Namespace], int] | None, help_text: str,
                description: str) -> argparse.ArgumentParser:
    """The parser of one command or ``convert`` source, with this module's help layout; ``func`` runs it."""
    parser = subparsers.add_parser(name, formatter_class=_Formatter, help=help_text, description=description)
    if func is not None:  # None: a parser of sub-commands only (``convert``)
        parser.set_defaults(func=func)
    return parser


def _add_target(parser: argparse.ArgumentParser, named: str) -> None:
    """``-o``: the dataset to write, by ID (then named ``named``) or full name."""
    parser.add_argument("-o", "--target", required=True, metavar="DST",
                        help=f"target: ID (named {named}) or DatasetXXX_Name")


def _add_source_and_target(parser: argparse.ArgumentParser, what: str, named: str) -> None:
    """``-d``: the nnU-Net dataset to read (``what``), and ``-o``: the dataset to write."""
    parser.add_argument("-d", "--source", required=True, metavar="SRC",
                        help=f"{what}: ID, DatasetXXX_Name or folder path")
    _add_target(parser, named)


def _add_download_and_target(parser: argparse.ArgumentParser, folder: str, default_id: str, named: str) -> None:
    """``-i``: the downloaded public dataset (``folder``), and ``-d``: the dataset to write."""
    parser.add_argument("-i", "--input", required=True, metavar="FOLDER", help=folder)
    parser.add_argument("-d", "--dataset-id", default=default_id, metavar="ID",
                        help=f"target ID (named {named}) or DatasetXXX_Name")


def _settings(args: argparse.Namespace):
    from .writer import DecompositionSettings

    return DecompositionSettings(
        n_scales=args.n_scales, m_neighbours=args.m_neighbours, thresholds=args.thresholds,
        fixed_radii_mm=None if args.fixed_radii is None else tuple(args.fixed_radii),
        quantiles=None if args.quantiles is None else tuple(args.quantiles),
    )


def _common_kwargs(args: argparse.Namespace) -> dict:
    return {"raw_root": args.raw_root, "overwrite": args.overwrite, "progress": not args.no_progress}


def _done(folder) -> int:
    print(folder)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux synth``."""
    from .synthetic import write_synthetic_dataset

    settings = _settings(args)
    return _done(write_synthetic_dataset(
        args.dataset_id, args.n_train, args.n_test, shape=args.shape, spacing=args.spacing, seed=args.seed,
        n_scales=args.n_scales, num_processes=args.num_processes, name=args.name, true_scales=args.true_scales,
        tumours=not args.no_tumours, settings=settings, preset=args.preset, **_common_kwargs(args),
    ))


def run_decompose(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux decompose``."""
    from .raw_dataset import decompose_dataset

    return _done(decompose_dataset(args.source, args.target, args.vessel_label, settings=_settings(args),
                                   num_processes=args.num_processes, **_common_kwargs(args)))


def run_multiclass(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux multiclass``."""
    from .multiclass import make_multiclass_dataset

    return _done(make_multiclass_dataset(args.source, args.target, raw_root=args.raw_root,
                                          overwrite=args.overwrite))


def run_msd(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux convert msd-hepaticvessel``."""
    from .msd import convert_msd_hepaticvessel

    return _done(convert_msd_hepaticvessel(args.input, args.dataset_id, settings=_settings(args),
                                           num_processes=args.num_processes, **_common_kwargs(args)))


def run_ircadb(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux convert ircadb``."""
    from .ircadb import convert_ircadb

    return _done(convert_ircadb(
        args.input, args.dataset_id, artery=args.artery, crop_liver=args.crop_liver, margin_mm=args.margin_mm,
        liver_label=args.liver_label, settings=_settings(args), num_processes=args.num_processes,
        **_common_kwargs(args),
    ))


def run_images_only(args: argparse.Namespace) -> int:
    """Run ``nnunet_aux images-only``."""
    from .images_only import make_images_only_dataset

    return _done(make_images_only_dataset(
        args.input, args.target, channel_names=args.channel_names, include_test=args.include_test,
        foreground_threshold=args.threshold, num_processes=args.num_processes, **_common_kwargs(args)))


_IMAGES_ONLY = """\
Output: $nnUNet_raw/DatasetXXX_Name with imagesTr (hard links to the images), labelsTr
(one dummy label map per case: 1 on the whole image, or where channel 0 > --threshold),
dataset.json (labels background 0, image 1) and images_only_report.json (case -> source
files). nnU-Net needs labels to plan and load data; nnUNetTrainerCLEFPretrain ignores
them. Next steps (nnU-Net's pretraining route, TARGET = the labelled dataset):
  nnUNetv2_plan_and_preprocess -d TARGET -c 3d_fullres
  nnUNetv2_plan_and_preprocess -d ID --no_pp
  nnUNetv2_move_plans_between_datasets -s TARGET -t ID -sp nnUNetPlans -tp nnUNetPlans_pretrain
  nnUNetv2_preprocess -d ID -plans_name nnUNetPlans_pretrain -c 3d_fullres
  nnUNetv2_train ID 3d_fullres all -p nnUNetPlans_pretrain -tr nnUNetTrainerCLEFPretrain"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synth``, ``decompose``, ``multiclass``, ``convert`` and ``images-only`` parsers.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers()``; each parser's ``func`` runs it.
    """
    _add_synth(subparsers)
    _add_decompose(subparsers)
    _add_multiclass(subparsers)
    _add_convert(subparsers)
    _add_images_only(subparsers)


def _add_synth(subparsers: argparse._SubParsersAction) -> None:
    p = _add_parser(
        subparsers, "synth", run_synth,
        help_text="write a synthetic scale-decomposed dataset (vessel trees with known radii)",
        description="Write a synthetic dataset: CT-like volumes with vessel trees (and tumours) into "
                    "$nnUNet_raw/DatasetXXX_SyntheticVessels (imagesTr, labelsTr, imagesTs, labelsTs). The "
                    "scales come from the same decomposition users' data get, unless --true-scales.\n\n"
                    + _DATA_CONTRACT,
    )
    p.add_argument("-d", "--dataset-id", type=int, default=900, metavar="ID", help="dataset ID")
    p.add_argument("-n", "--n-train", type=int, default=20, metavar="N", help="training cases")
    p.add_argument("--n-test", type=int, default=0, metavar="N", help="test cases with labels")
    p.add_argument("--preset", choices=("demo", "clinical"), default="demo",
                   help="image regime: 'demo' = easy (vessels 180-200 HU on 100 HU parenchyma, noise 20 HU, "
                        "64x96x96 voxels of 1.0x0.8x0.8 mm); 'clinical' = calibrated to portal-venous liver CT "
                        "(veins 155-175 HU on 110 HU, noise 22 HU, 32x96x96 voxels of 2.0x0.8x0.8 mm with the "
                        "slice profile's partial volume: the thinnest vessels near the noise floor). --shape "
                        "and --spacing override the preset's")
    p.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="volume shape in voxels (default: the preset's)")
    p.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                   help="voxel size in mm (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--name", default="SyntheticVessels", help="dataset name after DatasetXXX_")
    p.add_argument("--true-scales", action="store_true",
                   help="label the generator's true scales instead of decomposing the vessel masks")
    p.add_argument("--no-tumours", action="store_true", help="no tumour label")
    _add_common(p)


def _add_decompose(subparsers: argparse._SubParsersAction) -> None:
    p = _add_parser(
        subparsers, "decompose", run_decompose,
        help_text="decompose the vessel label of an nnU-Net raw dataset into scales",
        description="Turn any nnU-Net raw dataset with a vessel label into a scale-decomposed dataset. "
                    "Images are hard-linked (or copied) unchanged; the other labels are kept and numbered "
                    "after the scales.\n\n" + _DATA_CONTRACT,
    )
    _add_source_and_target(p, "source dataset", "<source name>_scales")
    p.add_argument("--vessel-label", default="vessel", metavar="NAME",
                   help="name of the label to decompose, as in the source dataset.json")
    _add_common(p)


def _add_multiclass(subparsers: argparse._SubParsersAction) -> None:
    p = _add_parser(
        subparsers, "multiclass", run_multiclass,
        help_text="make the multi-class baseline variant of a scale-decomposed dataset",
        description="Write the multi-class variant of a scale-decomposed dataset: same (hard-linked) "
                    "files, dataset.json with one class per scale (vessel_small, ...) and no regions; the "
                    "paper's multi-class baseline.",
    )
    _add_source_and_target(p, "scale-decomposed dataset", "<source name>_multiclass")
    _add_common(p, decomposition=False)


def _add_convert(subparsers: argparse._SubParsersAction) -> None:
    convert = _add_parser(
        subparsers, "convert", None, help_text="convert a public vessel dataset (MSD hepatic vessel, 3D-IRCADb)",
        description="Convert a public dataset into a scale-decomposed nnU-Net dataset.",
    )
    sources = convert.add_subparsers(dest="source_format", metavar="SOURCE", required=True)
    p = _add_parser(
        sources, "msd-hepaticvessel", run_msd,
        help_text="Medical Segmentation Decathlon Task08_HepaticVessel",
        description="Convert MSD Task08_HepaticVessel (imagesTr/hepaticvessel_XXX.nii.gz, labelsTr, imagesTs, "
                    "dataset.json; vessel 1, tumour 2). Labels become vessel scales 1..S and tumour S+1.\n\n"
                    + _DATA_CONTRACT,
    )
    _add_download_and_target(p, "the Task08_HepaticVessel folder", "508", "MSDHepaticVessel")
    _add_common(p)

    p = _add_parser(
        sources, "ircadb", run_ircadb,
        help_text="3D-IRCADb-01 (DICOM series per patient)",
        description="Convert 3D-IRCADb-01: 3Dircadb1.N/PATIENT_DICOM and MASKS_DICOM/<structure> DICOM series "
                    "(zipped or not). Vessel = portal vein + venous system (vena cava where a case has no "
                    "venous system), + artery with --artery. All cases go to imagesTr.\n\n" + _DATA_CONTRACT,
    )
    _add_download_and_target(p, "the 3Dircadb1 folder holding 3Dircadb1.1 ... 3Dircadb1.20", "509", "IRCADbVessels")
    p.add_argument("--artery", action="store_true",
                   help="add the hepatic artery to the vessel tree where a case has its mask")
    p.add_argument("--crop-liver", action="store_true",
                   help="crop each case to the liver mask's bounding box plus --margin-mm (the paper's setting)")
    p.add_argument("--margin-mm", type=float, default=10.0, metavar="MM",
                   help="margin around the liver box in mm")
    p.add_argument("--liver-label", action="store_true", help="add the liver as a label after the scales")
    _add_common(p)


def _add_images_only(subparsers: argparse._SubParsersAction) -> None:
    p = _add_parser(
        subparsers, "images-only", run_images_only,
        help_text="make a dataset of unlabelled images for self-supervised pretraining",
        description="Collect images (nnU-Net datasets or plain folders) into a new nnU-Net raw dataset with dummy "
                    "labels, for nnUNetTrainerCLEFPretrain.\n\n" + _IMAGES_ONLY,
    )
    p.add_argument("-i", "--input", required=True, nargs="+", metavar="SRC",
                   help="sources: nnU-Net datasets (ID, DatasetXXX_Name or folder with dataset.json; their "
                        "imagesTr) or folders of images (files ID_0000.nii.gz ..., or one single-channel case "
                        "per file)")
    _add_target(p, "<source name>_images, or ImagesOnly")
    p.add_argument("--channel-names", nargs="+", default=None, metavar="NAME",
                   help="nnU-Net channel names, one per channel (CT selects CT normalisation); needed when no "
                        "source is an nnU-Net dataset")
    p.add_argument("--include-test", action="store_true",
                   help="also take the imagesTs of dataset sources")
    p.add_argument("--threshold", type=float, default=None, metavar="VALUE",
                   help="dummy label only where channel 0 exceeds VALUE (e.g. -500 for CT: the body, as CLEF "
                        "crops); the whole image when not given")
    _add_common(p, decomposition=False)
    _add_num_processes(p, "worker processes writing label maps")
