"""The ``nnunet_aux trainers`` command: every trainer, its variants and the paper it implements.

The data come from :mod:`nnunet_aux.training.registry`; ``--markdown`` prints the README's table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from typing import Any, Iterable

#: Width the grouped listing is wrapped to.
WIDTH = 100


def variant_suffixes(base: str, names: Iterable[str]) -> str:
    """The variants of ``base`` as suffixes, epoch variants folded into one.

    Examples
    --------
    >>> variant_suffixes("T", ["T_smoke", "T_5epochs", "T_10epochs"])
    '_smoke, _{5,10}epochs'
    >>> variant_suffixes("T", [])
    ''
    """
    suffixes = [name[len(base):] for name in names]
    epochs = [m.group(1) for s in suffixes if (m := re.fullmatch(r"_(\d+)epochs", s))]
    others = [s for s in suffixes if not re.fullmatch(r"_(\d+)epochs", s)]
    if len(epochs) > 1:
        others.append("_{" + ",".join(epochs) + "}epochs")
    elif epochs:
        others.append(f"_{epochs[0]}epochs")
    return ", ".join(others)


def _wrap(text: str, first: str = "", rest: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False)


def _settings_text(attrs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in attrs.items())


def _unusual_smoke(trainers: list[dict[str, Any]]) -> list[str]:
    """``name: settings`` of the ``_smoke`` variants that differ from the common one."""
    from .variants import SMOKE_SETTINGS

    return [f"{name}: {_settings_text({k: v for k, v in attrs.items() if SMOKE_SETTINGS.get(k) != v})}"
            for t in trainers for name, attrs in t["variants"].items()
            if name.endswith("_smoke") and attrs != SMOKE_SETTINGS]


def length_note(trainers: list[dict[str, Any]]) -> str:
    """How the variants come about and what they set, one paragraph."""
    from .variants import EPOCH_VARIANTS, SMOKE_SETTINGS

    n_variants = sum(len(t["variants"]) for t in trainers)
    with_variants = sum(1 for t in trainers if t["variants"])
    smoke = (f"{SMOKE_SETTINGS['num_epochs']} epoch of {SMOKE_SETTINGS['num_iterations_per_epoch']} training and "
             f"{SMOKE_SETTINGS['num_val_iterations_per_epoch']} validation iterations")
    unusual = _unusual_smoke(trainers)
    text = (f"Training length: {with_variants} of these trainers also come as NAME_<X>epochs (X in "
            f"{', '.join(map(str, EPOCH_VARIANTS))}) and NAME_smoke ({smoke}, for tests and quick checks"
            + (f"; {'; '.join(unusual)}" if unusual else "") + f"): {n_variants} variants, generated at import by "
            "nnunet_aux/training/variants.py after nnU-Net's nnUNetTrainer_<X>epochs convention.")
    return text


def grouped_text(trainers: list[dict[str, Any]]) -> str:
    """The default listing: trainers by family, three lines each, then the papers."""
    from .registry import FAMILIES, PAPERS

    lines = ["Trainers for `nnUNetv2_train DATASET CONFIGURATION FOLD -tr NAME`, after",
             "`export nnUNet_extTrainer=$(nnunet_aux trainer-path)`. --all lists every name, --json everything.", ""]
    lines += _wrap(length_note(trainers))
    indent = " " * 6
    for family, heading in FAMILIES.items():
        members = [t for t in trainers if t["family"] == family]
        if not members:
            continue
        lines += ["", heading]
        for t in members:
            lines.append(f"  {t['name']}")
            lines += _wrap(t["description"], indent, indent)
            lines += _wrap(f"implements: {t['implements']}; needs: {t['needs']}", indent, indent + "  ")
            if t["variants"]:
                lines.append(f"{indent}variants: {variant_suffixes(t['name'], t['variants'])}")
    cited = [key for key in PAPERS if any(key in t["implements"] for t in trainers)]
    if cited:
        lines += ["", "Papers"]
        for key in cited:
            lines += _wrap(f"{key}: {PAPERS[key]}", "  ", " " * 4)
    return "\n".join(lines)


def all_names(trainers: list[dict[str, Any]]) -> list[str]:
    """Every class name: each trainer, then its variants."""
    return [name for t in trainers for name in (t["name"], *t["variants"])]


def markdown_table(trainers: list[dict[str, Any]]) -> str:
    """The README's table: one row per trainer, then the two variant rows."""
    from .registry import TRAINERS
    from .variants import EPOCH_VARIANTS, SMOKE_SETTINGS

    see = {t.name: t.see for t in TRAINERS}
    rows = ["| trainer | what it adds | paper, equation | needs |", "|---|---|---|---|"]
    for t in trainers:
        description = t["description"] + (f"; see {see[t['name']]}" if see.get(t["name"]) else "")
        rows.append(f"| `{t['name']}` | {description} | {t['implements']} | {t['needs']} |")
    if any(t["variants"] for t in trainers):
        unusual = "".join(f"; `{u.split(':')[0]}`:{u.split(':', 1)[1]}" for u in _unusual_smoke(trainers))
        rows.append(f"| `<trainer>_smoke` | {_settings_text(SMOKE_SETTINGS)}: one short epoch for tests and quick "
                    f"checks{unusual} | | |")
        rows.append(f"| `<trainer>_<X>epochs` | num_epochs=X, X in {', '.join(map(str, EPOCH_VARIANTS))} (nnU-Net's "
                    "lengths; the paper trained 2000) | | |")
    return "\n".join(rows)


def listing_text(args: argparse.Namespace) -> str | None:
    """What ``nnunet_aux trainers`` prints for ``args``; None when ``PATTERN`` matches no name."""
    from .registry import PAPERS, trainer_listing
    from .variants import EPOCH_VARIANTS, SMOKE_SETTINGS

    trainers = trainer_listing()
    pattern = (args.pattern or "").lower()
    trainers = [t for t in trainers if any(pattern in n.lower() for n in (t["name"], *t["variants"]))]
    if not trainers:
        return None
    if args.all:
        return "\n".join(n for n in all_names(trainers) if pattern in n.lower())
    if args.json:
        return json.dumps({"trainers": trainers, "papers": PAPERS, "epoch_variants": list(EPOCH_VARIANTS),
                           "smoke_settings": SMOKE_SETTINGS}, indent=1)
    return markdown_table(trainers) if args.markdown else grouped_text(trainers)


def run_trainers(args: argparse.Namespace) -> int:
    """Print the trainers in the asked format; 1 when ``PATTERN`` matches none."""
    text = listing_text(args)
    if text is None:
        print(f"nnunet_aux trainers: no trainer name contains {args.pattern!r}", file=sys.stderr)
        return 1
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `nnunet_aux trainers | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``trainers`` parser."""
    p = subparsers.add_parser(
        "trainers", help="list the trainers, their variants and the papers they implement",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "List every nnU-Net trainer this package provides, grouped by method: its name for\n"
            "`nnUNetv2_train ... -tr NAME`, one line on what it adds, the paper and equation it implements,\n"
            "the dataset it needs, and its generated variants (NAME_smoke, NAME_<X>epochs: the way to set\n"
            "a training's length, as nnU-Net's nnUNetTrainer_<X>epochs). Imports nnU-Net and torch."),
    )
    p.add_argument("pattern", nargs="?", metavar="PATTERN",
                   help="show only trainers (with --all: names) containing PATTERN, case-insensitive")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--all", action="store_true",
                     help="every class name, trainers and generated variants, one per line (for grep and scripts)")
    fmt.add_argument("--json", action="store_true",
                     help="everything as JSON: trainers with their variants and the attributes each sets, papers")
    fmt.add_argument("--markdown", action="store_true", help="the table of README.md's trainer section")
    p.set_defaults(func=run_trainers)
