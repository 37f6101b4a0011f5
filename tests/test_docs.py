"""The documentation site builds with ``mkdocs build --strict`` (a broken link, anchor or API reference fails it),
its command-line reference equals ``--help``, and its API reference holds every public class and function.

One build per session, into a pytest temporary directory (nothing is written into the tree).
"""

import ast
import contextlib
import html
import io
import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.xdist_group("docs")  # one build, shared by the tests of this file

ROOT = pathlib.Path(__file__).resolve().parents[1]
API_PACKAGES = ["losses", "trainers", "decoding", "attributes", "tasks", "backspace", "metrics"]
WIDTH = "100"  # the columns docs/hooks/cli_reference.py formats the help at


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (
        "mkdocs build --strict failed (install the tools with `pip install -e .[docs]`):\n" + res.stderr[-6000:])
    return out


def _text(page: pathlib.Path) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def _help(argv: list[str], monkeypatch) -> str:
    from seqlevel import cli

    monkeypatch.setenv("COLUMNS", WIDTH)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code in (0, None)
    return buf.getvalue().rstrip()


def test_site_builds_strict_and_offline(site):
    assert (site / "index.html").is_file()
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()  # theme.font: false
    for page in ["guides/sequencematch", "guides/mixce", "guides/cat", "guides/decoding", "guides/scaling",
                 "guides/benchmarks", "shown", "cli", "results", "reliability"]:
        assert (site / page / "index.html").is_file(), page


def test_cli_reference_equals_help_of_every_command(site, monkeypatch):
    from seqlevel import cli
    from seqlevel.bench import BENCHMARKS

    page = _text(site / "cli" / "index.html")
    argvs = [["--help"], *([c, "--help"] for c in cli.COMMANDS), *(["bench", b, "--help"] for b in BENCHMARKS)]
    assert len(argvs) == 1 + len(cli.COMMANDS) + len(BENCHMARKS) >= 15
    for argv in argvs:
        text = _help(argv, monkeypatch)
        assert text.startswith("usage: seqlevel"), argv
        assert text in page, f"docs/cli.md differs from `seqlevel {' '.join(argv)}`"


def test_cli_reference_equals_the_installed_command(site):
    """The same check through a real process: ``python -m seqlevel generate --help`` as a shell would run it."""
    env = {**os.environ, "COLUMNS": WIDTH,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "seqlevel", "generate", "--help"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip() in _text(site / "cli" / "index.html")


def _public_api(package: str) -> list[str]:
    """``seqlevel.PACKAGE.module.name`` for every public class and function defined in the package's modules
    (top-level ``def``/``class`` not starting with ``_``; where a module has ``__all__``, the names it lists)."""
    names = []
    for path in sorted((ROOT / "src" / "seqlevel" / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        exported = None
        for n in tree.body:
            if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets):
                with contextlib.suppress(ValueError):
                    exported = set(ast.literal_eval(n.value))
        rel = path.relative_to(ROOT / "src").with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__")
        names += [f"{module}.{d}" for d in defined
                  if (d in exported if exported is not None else not d.startswith("_"))]
    return names


@pytest.mark.parametrize("package", API_PACKAGES)
def test_api_reference_has_every_public_name(site, package):
    page = (site / "api" / package / "index.html").read_text()
    ids = set(re.findall(r'id="(seqlevel\.[\w.]+)"', page))
    expected = _public_api(package)
    assert len(expected) >= 5, package
    missing = [n for n in expected if n not in ids]
    assert not missing, f"not in the API reference of seqlevel.{package}: {missing}"


def test_every_figure_on_the_shown_page_links_to_its_measurement():
    rows = [line for line in (ROOT / "docs" / "shown.md").read_text().splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")]
    body = rows[1:]  # the first row is the header
    assert len(body) >= 8
    for row in body:
        assert re.search(r"\]\(results\.md#[\w-]+\)", row), f"row without a link to docs/results.md: {row}"


PAGES_WITH_CODE = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
                         if "```python" in p.read_text())


def test_pages_with_python_examples_are_found():
    assert {"guides/mixce.md", "guides/sequencematch.md", "guides/cat.md", "guides/decoding.md"} <= set(PAGES_WITH_CODE)


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_blocks_of_a_page_run_in_order(page, tmp_path, monkeypatch):
    """A page's Python examples run, in order, in one namespace (a later block may use an earlier one's names)."""
    import seqlevel.tasks

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(seqlevel.tasks, "TASKS", dict(seqlevel.tasks.TASKS))  # a page may register an example task
    ns = {"__name__": "docs"}
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), flags=re.S)
    assert blocks
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/{page}[python block {i}]", "exec"), ns)


def test_every_number_on_the_shown_page_is_copied_from_results():
    """The figures of docs/shown.md are copied from docs/results.md, not computed or rounded anew for the page."""
    results = (ROOT / "docs" / "results.md").read_text()
    shown = (ROOT / "docs" / "shown.md").read_text()
    numbers = set(re.findall(r"(?<![\w.])\d+\.\d+(?:e-?\d+)?(?!\w)|\d{1,3}(?:,\d{3})+", shown))
    assert len(numbers) >= 40
    assert not sorted(n for n in numbers if n not in results)
