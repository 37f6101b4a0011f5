"""``seqlevel bench NAME``: the options of each benchmark are the fields of its ``Config`` dataclass.

Each benchmark module (registry :data:`seqlevel.bench.BENCHMARKS`) exposes ``Config`` (field docstrings are the
help below), optionally ``QUICK`` (the ``--quick`` preset), ``run(cfg) -> dict`` (prints nothing but progress on
stderr) and optionally ``format_result(result) -> str`` (the human-readable table). This layer only parses,
calls ``run`` and prints: ``--json`` prints the result as one JSON line. Only the module of the benchmark being
run is imported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from seqlevel.bench import BENCHMARKS
from seqlevel.commands import LazyParser
from seqlevel.commands.options import add_config_arguments, config_from_args


class BenchParser(LazyParser):
    """A benchmark's sub-parser: its options come from ``module.Config`` the first time it parses."""

    def add_module_options(self, module) -> None:
        names = {f.name for f in dataclasses.fields(module.Config)}
        if hasattr(module, "QUICK") and "quick" not in names:
            self.add_argument("--quick", action="store_true",
                              help="the small preset (values given on the command line override it)")
        self.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
        self.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bar on stderr")
        add_config_arguments(self, module.Config)
        self.set_defaults(_run=lambda args: run_module(module, args))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One lazily loaded sub-parser per registered benchmark."""
    bsub = p.add_subparsers(dest="bench", metavar="NAME", required=True, parser_class=BenchParser)
    for name, (module, help_text) in BENCHMARKS.items():
        # argparse %-formats help strings: a literal '%' (as in "%BC") must be doubled or --help crashes
        bsub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text, module=module)


def run_module(module, args: argparse.Namespace) -> int:
    """Build the config (``--quick`` preset, then the options given), run it, print the table or the JSON."""
    from seqlevel.bench import progress

    args.command = f"bench {args.bench}"  # errors read "seqlevel bench NAME: error: ..."
    cfg = _config(module, args)
    with progress.enabled(not args.no_progress):
        result = module.run(cfg)
    if args.json or not hasattr(module, "format_result"):
        print(json.dumps(result))
    else:
        print(module.format_result(result))
    return 0


def _config(module, args: argparse.Namespace):
    quick = getattr(module, "QUICK", None) if getattr(args, "quick", False) else None
    return config_from_args(args, module.Config, base=quick)


def parse_config(name: str, argv: list[str]):
    """The ``Config`` that ``seqlevel bench NAME ARGV`` runs (for tests and scripts)."""
    parser = BenchParser(prog=f"seqlevel bench {name}", module=BENCHMARKS[name][0])
    args = parser.parse_args(argv)
    return _config(parser.load(), args)


def run(args: argparse.Namespace) -> int:
    raise AssertionError("unreachable: the benchmark's own run() is selected by its sub-parser")
