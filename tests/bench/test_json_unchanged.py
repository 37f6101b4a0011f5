"""Every ``seqlevel bench NAME`` prints the same JSON as before benchmarks became ``Config`` + ``run(cfg)``.

The fixtures in ``fixtures/bench_*.json`` were written by the argv runners (commit cf29030) for the small
configurations below; the same command lines must give the same JSON now. Key-to-Door is compared in
``test_cat_benches.py::test_key_to_door_contract`` (the same run as its contract test), and ``seqlevel demo
--quick``'s ``metrics.json`` in ``tests/test_demo.py`` (fixture ``demo_quick_metrics.json``, same commit). Timings (keys naming seconds, rates or
ratios) vary from run to run and are compared by presence only; every other number must agree to 1e-6 relative.
To rewrite the fixtures (only when a benchmark's output is meant to change): ``SEQLEVEL_WRITE_FIXTURES=1 pytest
tests/bench/test_json_unchanged.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from seqlevel.bench import BENCHMARKS
from seqlevel.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
# timings, and the demo's headline strings (formatted from the other numbers, one of them a timing)
VOLATILE = re.compile(r"second|(^|_)s$|(^|_)ms$|time|ratio|speedup|per_s|mfu|throughput|flops|headline")

ARGV: dict[str, list[str]] = {
    "speed": ["--case", "mixce-vs-mle", "--quick", "--runs", "2", "--warmup", "1"],
    "memory": ["--vocab-sizes", "1024,4096", "--tokens", "128", "--hidden", "16", "--chunk", "32"],
    "gpu": ["--dry-run", "--speed-cases", "mixce-vs-mle", "--peak-flops", "1e12"],
    "cat-lm": ["--quick"],
    "attribute-estimation": ["--quick"],
    "steering": ["--quick"],
    "markov": ["--vocab-size", "6", "--seeds", "7", "--objectives", "mle,mixce:0.5", "--train-size", "200",
               "--dev-size", "50", "--max-epochs", "2", "--batch-size", "50", "--no-progress"],
    # the fixture was the library call benchmark(cfg) of tests/bench/test_markov_backspace_bench.py (the old command
    # line could not set these fields); every one of them is a flag now
    "markov-backspace": ["--quick", "--n-train", "200", "--n-dev", "20", "--pretrain-steps", "4", "--finetune-steps",
                         "2", "--n-samples", "20", "--eval-every", "2", "--n-embd", "16", "--rollouts-per-refresh", "4",
                         "--replay-batch-size", "2", "--replay-buffer-size", "8", "--max-new-actions", "12",
                         "--sample-every", "1"],
    "arithmetic": ["--quick", "--steps", "4", "--noises", "0.3"],
}


def assert_same(new, old, path: str = "$") -> None:
    """``new`` equals ``old`` up to timings (present, any value) and 1e-6 relative on other numbers."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(new) == set(old), (path, sorted(set(new) ^ set(old)))
        for k in old:
            if VOLATILE.search(str(k)):
                continue
            assert_same(new[k], old[k], f"{path}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(new) == len(old), (path, new, old)
        for i, (a, b) in enumerate(zip(new, old)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(old, float) and not isinstance(old, bool):
        assert isinstance(new, (int, float)), (path, new, old)
        assert (math.isnan(old) and math.isnan(new)) or math.isclose(new, old, rel_tol=1e-6, abs_tol=1e-9), \
            (path, new, old)
    else:
        assert new == old, (path, new, old)


def bench_json(capsys, name: str, argv: list[str], tmp_path) -> dict:
    argv = list(argv)
    if name == "arithmetic":
        argv += ["--output-dir", str(tmp_path / "arith")]
    assert main(["bench", name, *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARGV))
def test_bench_json_unchanged(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a runner that writes a default directory writes it here
    got = bench_json(capsys, name, ARGV[name], tmp_path)
    path = FIXTURES / f"bench_{name}.json"
    if os.environ.get("SEQLEVEL_WRITE_FIXTURES") == "1":
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"wrote {path.name}")
    assert_same(got, json.loads(path.read_text()))


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_option_has_help_from_the_config(name):
    """Each benchmark is ``Config`` + ``run(cfg)``; every field is an option whose help is the field's docstring."""
    import dataclasses
    import importlib

    from seqlevel.commands.options import field_docs

    module = importlib.import_module(BENCHMARKS[name][0])
    assert callable(module.run) and dataclasses.is_dataclass(module.Config)
    docs = field_docs(module.Config)
    missing = [f.name for f in dataclasses.fields(module.Config) if not docs.get(f.name)]
    assert not missing, f"{name}: fields without a docstring: {missing}"
    assert not hasattr(module, "add_arguments")  # the command layer derives the options
