"""The sub-commands of ``seqlevel``: one module each, exposing ``add_arguments(parser)`` and ``run(args) -> int``.

``seqlevel.cli`` holds the table of sub-commands; this package holds the plumbing the table needs: a parser that
imports a command's module only when that command is asked for (so ``seqlevel --help`` stays fast), and
:func:`dispatch`, which turns a bad input into one clear line and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# What a bad input raises below commands/: one line on stderr and exit status 2 (argparse's convention). OSError
# covers the file system saying no (missing, read-only, not a directory, no permission); its message names the path.
USER_ERRORS = (ValueError, ImportError, OSError)


class LazyParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose options are added by ``module.add_arguments`` the first time it parses.

    Used for sub-commands (and benchmarks): only the module of the command being run (or asked for ``--help``) is
    imported.
    """

    def __init__(self, *args, module: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._module_name, self._module = module, None

    def load(self):
        """Import the module and add its options (once); returns the module."""
        if self._module is None and self._module_name is not None:
            self._module = importlib.import_module(self._module_name)
            self.add_module_options(self._module)
        return self._module

    def add_module_options(self, module) -> None:
        """A command module supplies its options (``add_arguments``) and its ``run(args)``."""
        module.add_arguments(self)
        self.set_defaults(_run=module.run)

    def parse_known_args(self, args=None, namespace=None):
        self.load()
        return super().parse_known_args(args, namespace)


def build_parser(table: dict[str, tuple[str, str]], prog: str = "seqlevel", description: str = "",
                 version: str | None = None) -> argparse.ArgumentParser:
    """A parser with one lazily loaded sub-parser per entry ``name: (module, one-line help)`` of ``table``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if version is not None:
        parser.add_argument("--version", action="version", version=f"{prog} {version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=LazyParser)
    for name, (module, help_text) in table.items():
        sub.add_parser(name, help=help_text, description=help_text, module=module)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command; a bad input prints ``<prog> <command>: error: ...`` and returns 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._argv = argv  # the exact command line, e.g. for the resume hint after an interrupted train
    try:
        return args._run(args)
    except USER_ERRORS as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a training loop (loading, generating): no traceback
        print(f"\n{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
