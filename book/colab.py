"""The package revision a chapter installs on Colab: one setting, written into every chapter's setup cell.

The revision lives in ``pyproject.toml`` (``[tool.fubook] colab_revision``), the repository in ``_config.yml``
(``repository.url``, which also drives the launch buttons). On Colab each chapter's setup cell installs
``fuhelpers @ git+<url>@<revision>``, so a reader gets the package these outputs were checked against, not
whatever main holds that day. ``tests/test_notebooks.py`` checks that every chapter names the configured
revision and that the revision's ``fuhelpers/`` equals the one of the checked-out commit.

``python book/colab.py``         rewrite the chapters' install line from the configuration
``python book/colab.py --pin``   first set the revision to the current commit (``make colab-pin``; then commit)
"""
from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
REVISION_LINE = re.compile(r'^colab_revision = "([0-9a-f]*)"$', re.M)
# the install argument in a setup cell; a chapter may ask for extras, e.g. "fuhelpers[flower] @ git+..."
SPEC = re.compile(r'"(?:fuhelpers(\[[\w,]*\])? @ )?git\+https://[^"]*"')


def revision() -> str:
    """The commit every chapter installs on Colab."""
    return REVISION_LINE.search(PYPROJECT.read_text()).group(1)


def spec(extras: str = "") -> str:
    """The pip requirement of the setup cells: the package (with ``extras``, e.g. ``"[flower]"``) at the
    configured revision."""
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    return f"fuhelpers{extras} @ git+{url}@{revision()}"


def chapters() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def setup_cell(nb) -> nbformat.NotebookNode:
    """A chapter's setup cell: its first code cell, the one that installs the package on Colab."""
    return next(c for c in nb.cells if c.cell_type == "code")


def write_chapters() -> list[Path]:
    """Put :func:`spec` into every chapter's setup cell; return the chapters that changed."""
    changed = []
    for path in chapters():
        nb = nbformat.read(path, 4)
        cell = setup_cell(nb)
        new, count = SPEC.subn(lambda m: f'"{spec(m.group(1) or "")}"', cell.source)
        if count != 1:
            raise ValueError(f"{path.name}: expected one install line in the setup cell, found {count}")
        if new != cell.source:
            cell.source = new
            nbformat.write(nb, path)
            changed.append(path)
    return changed


def pin_to_head() -> str:
    """Set ``colab_revision`` to the checked-out commit (which must have no uncommitted package changes)."""
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "fuhelpers", "pyproject.toml", "requirements.txt"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    if dirty.strip():
        raise SystemExit(f"commit the package first:\n{dirty}")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    PYPROJECT.write_text(REVISION_LINE.sub(f'colab_revision = "{head}"', PYPROJECT.read_text()))
    return head


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", action="store_true", help="set the revision to the current commit first")
    args = parser.parse_args(argv)
    if args.pin:
        print("pinned", pin_to_head())
    for path in write_chapters():
        print("rewrote", path.relative_to(ROOT))
    print("chapters install:", spec())


if __name__ == "__main__":
    main()
