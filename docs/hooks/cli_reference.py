"""MkDocs hook: the command-line reference (``docs/cli.md``) is written from the parsers at build time.

The page holds a marker line, ``<!-- cli-reference -->``; this hook replaces it by the output of
``seqlevel --help``, ``seqlevel COMMAND --help`` for every entry of :data:`seqlevel.cli.COMMANDS` and
``seqlevel bench NAME --help`` for every entry of :data:`seqlevel.bench.BENCHMARKS`, each produced by running the
command's own ``main`` in-process. A new command or option therefore appears on the page with no edit here, and
``tests/test_docs.py`` checks that the built page contains exactly what ``--help`` prints.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

MARKER = "<!-- cli-reference -->"
WIDTH = 100  # argparse wraps help at $COLUMNS - 2; fixed so the page does not depend on the terminal


def help_text(argv: list[str]) -> str:
    """What ``seqlevel ARGV`` prints (ARGV ends with ``--help``), wrapped at :data:`WIDTH` columns."""
    from seqlevel import cli

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            try:
                cli.main(argv)
            except SystemExit as e:  # argparse exits 0 after printing the help
                if e.code not in (0, None):
                    raise RuntimeError(f"`seqlevel {' '.join(argv)}` exited with {e.code}") from e
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return buf.getvalue()


def commands() -> list[list[str]]:
    """Every argv whose help the page shows, in page order."""
    from seqlevel import cli
    from seqlevel.bench import BENCHMARKS

    out = [["--help"]]
    for name in cli.COMMANDS:
        out.append([name, "--help"])
        if name == "bench":
            out.extend(["bench", b, "--help"] for b in BENCHMARKS)
    return out


def _section(argv: list[str]) -> str:
    title = " ".join(["seqlevel", *argv[:-1]])
    level = "###" if argv[0] == "bench" and len(argv) > 2 else "##"
    return f"{level} `{title}`\n\n````text\n{help_text(argv).rstrip()}\n````\n"


def on_config(config, **kwargs):
    src = str(Path(config["config_file_path"]).resolve().parent / "src")
    if src not in sys.path:  # the tree being documented, not another installed copy
        sys.path.insert(0, src)
    return config


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, "\n".join(_section(argv) for argv in commands()))
