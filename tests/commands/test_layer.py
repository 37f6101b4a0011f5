"""The command layer: every sub-command's --help works, and nothing below commands/ reaches up into it."""

from __future__ import annotations

import ast
import pathlib

import pytest

from seqlevel.bench import BENCHMARKS
from seqlevel.cli import COMMANDS, main

SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "seqlevel"
LOWER = ("losses", "backspace", "decoding", "attributes", "metrics", "tasks")
FORBIDDEN = ("argparse", "seqlevel.trainers", "seqlevel.commands")


def _imports(path: pathlib.Path) -> list[str]:
    """Every module name imported anywhere in the file (top level and inside functions)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.append(str(node.args[0].value))
    return names


@pytest.mark.parametrize("package", LOWER)
def test_lower_layers_never_import_argparse_trainers_or_commands(package):
    bad = [f"{p.relative_to(SRC)} imports {m}" for p in sorted((SRC / package).rglob("*.py")) for m in _imports(p)
           if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, "imports that run back up the layers: " + "; ".join(bad)


def test_the_check_would_catch_an_upward_import(tmp_path):
    p = tmp_path / "x.py"
    p.write_text("def f():\n    from seqlevel.trainers.mixce import MixCEConfig\n    import argparse\n")
    assert _imports(p) == ["seqlevel.trainers.mixce", "argparse"]


def test_cli_is_only_the_table():
    tree = ast.parse((SRC / "cli.py").read_text(encoding="utf-8"))
    funcs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert set(funcs) <= {"main", "_parse"}
    for name, (module, _help) in COMMANDS.items():
        assert module == f"seqlevel.commands.{name}"


@pytest.mark.parametrize("argv", [[], *[[c] for c in COMMANDS], *[["bench", b] for b in BENCHMARKS]],
                         ids=lambda a: " ".join(a) or "seqlevel")
def test_help_works_on_every_command(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: seqlevel")


def test_train_help_comes_from_the_config_fields(capsys):
    from seqlevel.trainers import MixCEConfig, SequenceMatchConfig

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for cls, name in ((MixCEConfig, "mixce_eta"), (SequenceMatchConfig, "bc_warmup_steps")):
        help_text = " ".join(cls.__dataclass_fields__[name].metadata["help"].split())
        assert help_text in out
    for flag in ("--report_to", "--eval_strategy", "--bf16", "--save_total_limit", "--gradient_checkpointing",
                 "--batch-size", "--epochs", "--lr", "--grad-accum", "--use_peft", "--lora-r", "--config"):
        assert flag in out
