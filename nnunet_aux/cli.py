"""The ``nnunet_aux`` command.

Each command module exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` (called with the parsed arguments; returns an exit code or None). To keep
``nnunet_aux -h`` fast, a module is imported only when one of its commands runs; the
table :data:`COMMANDS` names the module and a one-line help of every command. A module
that is not installed is left out.

Errors in the user's input (:class:`nnunet_aux.errors.InputError`) end with a one-line
message on stderr and exit code 2, as do files that cannot be read or written (an
:class:`OSError` naming its file: no permission, a full disk); Ctrl-C ends with one line and
exit code 130. Warnings about legal input that is surely not what was meant
(:class:`nnunet_aux.errors.InputWarning`) are one ``warning:`` line each. Other exceptions
are bugs and keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Sequence

from . import __version__

#: command -> (module that registers it, one-line help shown by ``nnunet_aux -h``)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("nnunet_aux.conversion.cli", "write a synthetic scale-decomposed dataset"),
    "decompose": ("nnunet_aux.conversion.cli", "decompose the vessel label of an nnU-Net raw dataset into scales"),
    "multiclass": ("nnunet_aux.conversion.cli", "make the multi-class baseline variant of a scale dataset"),
    "convert": ("nnunet_aux.conversion.cli", "convert a public vessel dataset (MSD hepatic vessel, 3D-IRCADb)"),
    "images-only": ("nnunet_aux.conversion.cli", "make a dataset of unlabelled images for self-supervised pretraining"),
    "trainer-path": ("nnunet_aux.cli", "print the folder to set as nnUNet_extTrainer"),
    "trainers": ("nnunet_aux.training.cli", "list the trainers, their variants and the papers they implement"),
    "upgrade": ("nnunet_aux.conversion.upgrade", "update a dataset written by an earlier nnunet_aux"),
    "map-labels": ("nnunet_aux.conversion.map_labels", "write predictions with the source dataset's label values"),
    "evaluate": ("nnunet_aux.evaluation.cli", "evaluate a folder of predictions against references"),
    "demo": ("nnunet_aux.demo", "run the end-to-end demo on synthetic data"),
    "experiment": ("nnunet_aux.experiment", "run an experiment (several trainers, folds, evaluation)"),
}


def add_command_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str,
                       description: str) -> argparse.ArgumentParser:
    """Add the parser of command ``name``, its description printed as written, and return it.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        From ``ArgumentParser.add_subparsers()``.
    name, help_text, description : str
        The command, its line in ``nnunet_aux -h`` and the text of ``nnunet_aux NAME -h``.

    Returns
    -------
    parser : argparse.ArgumentParser
        The caller adds the arguments and sets ``func``.
    """
    return subparsers.add_parser(name, help=help_text, description=description,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def run_trainer_path(args: argparse.Namespace) -> int:
    """Print the folder that nnU-Net's ``nnUNet_extTrainer`` should point at."""
    from .training import trainer_path

    print(trainer_path())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``trainer-path`` parser."""
    p = subparsers.add_parser(
        "trainer-path", help=COMMANDS["trainer-path"][1],
        description="Print the folder holding this package's nnU-Net trainers, for "
                    "`export nnUNet_extTrainer=$(nnunet_aux trainer-path)`.",
    )
    p.set_defaults(func=run_trainer_path)


def _available(module: str) -> bool:
    # Look for the file rather than using importlib.util.find_spec, which would import
    # the parent packages (slow for `nnunet_aux -h`).
    parts = module.split(".")
    if parts[0] != __package__:
        return importlib.util.find_spec(module) is not None
    base = Path(__file__).parent.joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only the module owning ``command`` is imported.

    Parameters
    ----------
    command : str, optional
        The command about to run; None gives a parser with one-line stand-ins for
        every command (enough for ``nnunet_aux -h``).

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="nnunet_aux",
        description="Auxiliary-task training for nnU-Net v2: data conversion into scale-decomposed datasets, "
                    "trainers for nnUNetv2_train -tr ..., evaluation. `nnunet_aux COMMAND -h` explains each "
                    "command.",
    )
    parser.add_argument("--version", action="version", version=f"nnunet_aux {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    if command in COMMANDS:
        module_name = COMMANDS[command][0]
        module = sys.modules[__name__] if module_name == __name__ else importlib.import_module(module_name)
        module.register(subparsers)
    for name, (module_name, help_text) in COMMANDS.items():
        if name not in subparsers.choices and _available(module_name):
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    # The first word that is not an option is the command ("nnunet_aux synth -h").
    return next((a for a in argv if not a.startswith("-")), None)


def _tolerate_ascii_console() -> None:
    """Let tables with ``±`` print on consoles whose locale is ASCII (e.g. ``LANG=C`` on CI).

    Files are always written as UTF-8; only what goes to the terminal degrades to ``?``.
    """
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnunet_aux`` console script.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    exit_code : int
        0 on success, 2 for bad input, 130 when interrupted.
    """
    from .errors import InputError

    argv = list(sys.argv[1:] if argv is None else argv)
    _tolerate_ascii_console()
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    prefix = f"nnunet_aux {args.command}"
    with warnings.catch_warnings():
        _print_input_warnings(prefix)
        try:
            code = func(args)
        except InputError as e:
            print(f"{prefix}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        except OSError as e:
            # A file the command cannot read or write (permission, full disk, a file-size limit):
            # the environment, not a bug; the message names the file.
            print(f"{prefix}: error: {_os_error_line(e)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130
    return 0 if code is None else int(code)


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line."""
    return " ".join(str(error).split("\n")).strip()


def _os_error_line(error: OSError) -> str:
    where = f" {error.filename}" if error.filename is not None else ""
    other = f" -> {error.filename2}" if getattr(error, "filename2", None) is not None else ""
    return f"cannot access{where}{other}: {error.strerror or error}"


def _print_input_warnings(prefix: str) -> None:
    """Show :class:`~nnunet_aux.errors.InputWarning` as one ``PREFIX: warning: ...`` line each, every time."""
    from .errors import InputWarning

    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            print(f"{prefix}: warning: {_one_line(message)}", file=sys.stderr)
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.simplefilter("always", InputWarning)
    warnings.showwarning = show


if __name__ == "__main__":
    sys.exit(main())
