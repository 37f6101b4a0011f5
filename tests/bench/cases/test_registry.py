"""The one registry of speed and memory cases, and the JSON of ``bench speed`` / ``bench memory`` before and after
the cases moved into ``seqlevel.bench.cases`` (issue 16)."""

from __future__ import annotations

import importlib
import json

import pytest

from seqlevel.bench.cases import CASES, build, device_sync, names
from seqlevel.cli import main

# `seqlevel bench memory --vocab-sizes 1024,4096 --tokens 128 --hidden 16 --chunk 32 --json` before the move
# (commit d3252f3): the order of (loss, vocab_size) rows and the exact peaks of the losses whose inputs did not
# change (the SequenceMatch case's loss fields now come from the shared synthetic builder, built before measuring).
MEMORY_BEFORE = [("mle", 1024, 551052), ("mixce", 1024, 551052), ("dft", 1024, 551052), ("tailr", 1024, 551052),
                 ("sequencematch", 1024, None), ("attribute", 1024, 590668),
                 ("mle", 4096, 2123916), ("mixce", 4096, 2123916), ("dft", 4096, 2123916), ("tailr", 4096, 2123916),
                 ("sequencematch", 4096, None), ("attribute", 4096, 2163532)]
SPEED_KEYS_BEFORE = {"case", "ratio_median", "a_median_s", "b_median_s", "runs"}


def test_every_factory_resolves_and_kinds_partition_the_names():
    for name, case in CASES.items():
        module, fn = case.factory.split(":")
        assert callable(getattr(importlib.import_module(f"seqlevel.bench.cases.{module}"), fn)), name
    assert set(names("speed")) | set(names("memory")) == set(CASES)
    assert not set(names("speed")) & set(names("memory"))
    assert {"cat-estimate-vs-forward-k5", "rollout-throughput", "sm-step-vs-mle"} <= set(names("speed"))


def test_unknown_case_or_wrong_kind_says_what_exists():
    with pytest.raises(ValueError, match="unknown speed case 'mle'"):
        build("mle", "speed", device="cpu", quick=True)
    with pytest.raises(ValueError, match="kind must be one of"):
        names("timing")


def test_device_sync_is_a_noop_on_cpu():
    assert device_sync("cpu")() is None


def test_memory_json_same_as_before(capsys):
    assert main(["bench", "memory", "--vocab-sizes", "1024,4096", "--tokens", "128", "--hidden", "16", "--chunk",
                 "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["cases"]
    rows = out["cases"]
    assert [(r["loss"], r["vocab_size"]) for r in rows] == [(n, v) for n, v, _ in MEMORY_BEFORE]
    for r, (_, _, peak) in zip(rows, MEMORY_BEFORE):
        assert list(r) == ["loss", "vocab_size", "peak_bytes", "mle_peak_bytes", "ratio"]
        if peak is not None:
            assert r["peak_bytes"] == peak, r
    sm = [r for r in rows if r["loss"] == "sequencematch"]
    assert [round(r["ratio"], 2) for r in sm] == [0.77, 0.75]  # 0.764 / 0.754 before


def test_speed_json_same_keys_as_before(capsys):
    assert main(["bench", "speed", "--case", "mixce-vs-mle", "--quick", "--runs", "2", "--warmup", "1",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == SPEED_KEYS_BEFORE and out["case"] == "mixce-vs-mle" and out["runs"] == 2
