"""Structure of the chapter notebooks: the papermill switch works and every chapter is in the book.

Execution itself is checked by nbval (``make nbval``) and by the book build; these tests are fast.
"""
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))
import colab  # noqa: E402  (book/colab.py: the Colab install line)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def tagged(nb, tag):
    return [i for i, c in enumerate(nb.cells) if tag in c.metadata.get("tags", [])]


def test_there_are_chapters():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_injects_scale_after_the_parameters_cell(path, tmp_path):
    nb = nbformat.read(path, 4)
    params = tagged(nb, "parameters")
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    assert "scale = " in nb.cells[params[0]].source and "seed = 0" in nb.cells[params[0]].source
    assert "scale" in nb.cells[params[0] + 1].source and "seed" in nb.cells[params[0] + 1].source, \
        "sizes are derived from the switch in the cell after the parameters cell"
    out = tmp_path / path.name
    papermill.execute_notebook(str(path), str(out), parameters={"scale": "smoke", "seed": 3}, prepare_only=True,
                               progress_bar=False, kernel_name="python3")
    injected = nbformat.read(out, 4)
    i = tagged(injected, "injected-parameters")
    assert i == [params[0] + 1]
    assert "scale = \"smoke\"" in injected.cells[i[0]].source and "seed = 3" in injected.cells[i[0]].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_saves_its_results_under_its_own_stem(path):
    nb = nbformat.read(path, 4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f'save_results("{path.stem}"' in code


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_is_in_the_table_of_contents(path):
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    assert f"notebooks/{path.stem}" in files


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_is_committed_executed_top_to_bottom(path):
    # the book renders the committed outputs (execute_notebooks: off), so they must come from one full run
    nb = nbformat.read(path, 4)
    counts = [c.get("execution_count") for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), "re-execute the chapter: make execute"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


def sanitized(text):
    from nbval.plugin import get_sanitize_patterns
    import re
    for regex, replace in get_sanitize_patterns((ROOT / "notebooks" / "sanitize.cfg").read_text()):
        text = re.sub(regex, replace, text)
    return text


def test_sanitizer_equates_rounding_errors_and_column_widths_only():
    # float errors of identities (below 1e-4) and a printed zero compare equal, whatever their digits
    assert sanitized("max |hand - package| = 1.5e-08") == sanitized("max |hand - package| = 0.0e+00")
    assert sanitized("worst 3e-07, Gamma -2e-11") == sanitized("worst 9e-06, Gamma 0e+00")
    # numbers that are results stay as they are
    for a, b in [("step 0.935429", "step 0.935426"), ("1.0e+00", "2.0e+00"), ("err 2e-04", "err 3e-04"),
                 ("55.39", "55.38"), ("10.0e+00", "11.0e+00")]:
        assert sanitized(a) != sanitized(b), (a, b)
    # table columns aligned to another width compare equal
    assert sanitized("a    1.5\nbb   2.5") == sanitized("a 1.5\nbb 2.5")


def _git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_installs_the_configured_revision(path):
    # one place (pyproject's colab_revision, _config.yml's repository) decides what every chapter installs
    source = colab.setup_cell(nbformat.read(path, 4)).source
    assert re.fullmatch(r"[0-9a-f]{40}", colab.revision())
    found = [m.group(0) for m in colab.SPEC.finditer(source)]
    assert len(found) == 1 and found[0] == f'"{colab.spec(colab.SPEC.search(source).group(1) or "")}"', \
        "run: python book/colab.py"
    assert "google.colab" in source


def test_colab_revision_holds_the_package_of_this_commit():
    # a reader on Colab gets the package these outputs were checked against
    if not (ROOT / ".git").exists() or _git("rev-parse", "--is-shallow-repository") == "true":
        pytest.skip("needs the repository's history")
    rev = colab.revision()
    assert _git("cat-file", "-t", rev) == "commit"
    assert _git("rev-parse", f"{rev}:fuhelpers") == _git("rev-parse", "HEAD:fuhelpers"), \
        "the package changed since the pinned revision: commit it, then `make colab-pin` and commit"
