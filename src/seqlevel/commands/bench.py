"""``seqlevel bench NAME``: dispatches to the registry :data:`seqlevel.bench.BENCHMARKS`.

Each benchmark module defines its own options (``add_arguments``) and ``run(args) -> int`` beside its code; only
the module of the benchmark being run is imported.
"""

from __future__ import annotations

import argparse

from seqlevel.bench import BENCHMARKS
from seqlevel.commands import LazyParser


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One lazily loaded sub-parser per registered benchmark."""
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True, parser_class=LazyParser)
    for name, (module, help_text) in BENCHMARKS.items():
        # the benchmark's module supplies its options and its run(); set_defaults(_run=...) overrides ours
        # argparse %-formats help strings: a literal '%' (as in "%BC") must be doubled or --help crashes
        bsub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text, module=module)


def run(args: argparse.Namespace) -> int:
    raise AssertionError("unreachable: the benchmark's own run() is selected by its sub-parser")
