"""Command-line options derived from a ``Config`` dataclass: one source for names, types, defaults and help.

A field becomes ``--name`` (and ``--na-me``) through ``transformers.HfArgumentParser``'s field rules; its help is
the field's docstring (the string literal under it, as in the benchmark configs) or ``metadata["help"]``. Tuple
fields take a comma or space separated list (``--seeds 0,1,2`` or ``--seeds 0 1 2``). Only options given on the
command line reach the namespace, so a preset (``--quick``) keeps every value not given: see
:func:`config_from_args`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing

from transformers import HfArgumentParser

_KIND_NAMES = {int: "integers", float: "numbers", str: "names"}


def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` from the string literal under each field of dataclass ``cls`` (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body
        for a, b in zip(body, body[1:]):
            if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


class _BadList(list):
    """A list option that did not parse; :func:`config_from_args` raises its message as a ValueError (argparse
    would print its usage and exit, where every other bad value is one line and exit status 2)."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message


def _list_type(kind, flag: str):
    """An argparse type that reads ``"1,2,3"`` (or one item of a space separated list) into a list."""
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            return _BadList(f"{flag} must be a comma list of {_KIND_NAMES.get(kind, kind.__name__)}, got {text!r}")
    parse.__name__ = kind.__name__
    return parse


def _tuple_item(hint):
    """``X`` for ``tuple[X, ...]`` or ``list[X]`` (optionally ``| None``), else None."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _tuple_item(inner[0]) if len(inner) == 1 else None
    if typing.get_origin(hint) in (tuple, list) and args:
        return args[0]
    return None


def add_config_arguments(parser: argparse.ArgumentParser, cls, base=None) -> None:
    """One option per init field of dataclass ``cls``; the help shows ``base``'s value (default ``cls()``)."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    base = cls() if base is None else base
    group = parser.add_argument_group(f"options ({cls.__module__}.{cls.__qualname__})")
    for f in dataclasses.fields(cls):
        if not f.init or typing.get_origin(hints[f.name]) is dict or hints[f.name] is dict:
            continue  # a dict field (extra settings for pilots) is set from Python, not from the command line
        meta = {k: v for k, v in f.metadata.items() if k == "help"}
        meta.setdefault("help", docs.get(f.name, ""))
        item = _tuple_item(hints[f.name])
        g = dataclasses.field(default=getattr(base, f.name), metadata=meta)
        g.name, g.type = f.name, (str if item is not None else hints[f.name])
        before = len(group._group_actions)
        HfArgumentParser._parse_dataclass_field(group, g)
        for action in group._group_actions[before:]:
            action.option_strings.sort(key=lambda o: "_" in o)  # usage and errors show --na-me first
            if item is not None:
                action.type, action.nargs = _list_type(item, action.option_strings[0]), "+"
                action.metavar = {int: "N", float: "X"}.get(item, "NAME")
            value = getattr(base, f.name)
            if action.help and not action.option_strings[0].startswith("--no"):
                shown = ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value
                action.help = f"{action.help} (default: {shown})"
            if action.help and action.option_strings[0].startswith("--no") and isinstance(action,
                                                                                   argparse._StoreFalseAction):
                # HfArgumentParser gives --no-x the help of --x, which says the opposite
                action.help = f"switch off --{f.name.replace('_', '-')} (on by default: {action.help})"
            if action.help:
                action.help = action.help.replace("%", "%%")  # argparse %-formats help strings
            action.default = argparse.SUPPRESS


def config_from_args(args: argparse.Namespace, cls, base=None):
    """``base`` (default ``cls()``) with the fields given on the command line replaced; tuples stay tuples."""
    hints = typing.get_type_hints(cls)
    base = cls() if base is None else base
    over = {}
    for f in dataclasses.fields(cls):
        if f.init and hasattr(args, f.name):
            value = getattr(args, f.name)
            if isinstance(value, list) and value and isinstance(value[0], list):  # --x 1,2 3 → [[1, 2], [3]]
                bad = [part for part in value if isinstance(part, _BadList)]
                if bad:
                    raise ValueError(bad[0].message)
                value = [v for part in value for v in part]
            if isinstance(value, list):
                origin = typing.get_origin(hints[f.name])
                value = list(value) if origin is list else tuple(value)
            over[f.name] = value
    return dataclasses.replace(base, **over)
