"""Every ``Examples`` section in the package, the benchmarks and the conversion scripts runs and
gives what it shows: the numpydoc examples are documentation, and documentation that is never
run goes stale without anyone noticing."""

from __future__ import annotations

import doctest
import importlib
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_FOLDERS = ("benchmarks", "dataset_conversion")  # scripts, imported by file name from their folder


def _files_with_examples() -> list[Path]:
    found = []
    for folder in ("nnunet_aux", *SCRIPT_FOLDERS):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ">>>" in path.read_text(encoding="utf-8"):
                found.append(path)
    return found


def _import(path: Path):
    relative = path.relative_to(ROOT).with_suffix("")
    if relative.parts[0] in SCRIPT_FOLDERS:
        folder = str(ROOT / relative.parts[0])
        if folder not in sys.path:
            sys.path.insert(0, folder)
        return importlib.import_module(".".join(relative.parts[1:]))
    name = ".".join(relative.parts)
    return importlib.import_module(name[: -len(".__init__")] if name.endswith(".__init__") else name)


FILES = _files_with_examples()


def test_the_examples_are_found():
    assert len(FILES) > 50  # a broken search would make the test below pass vacuously


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docstring_examples(path: Path):
    module = _import(path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, module.__name__) if t.examples]
    for test in tests:
        runner.run(test, out=report.write)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, report.getvalue()
