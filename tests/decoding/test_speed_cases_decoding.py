"""The decoding speed cases build (their factories check that A and B take identical actions) and run once."""

from __future__ import annotations

import pytest

from seqlevel.bench.speed import CASES, build_case


@pytest.mark.parametrize("name", ["decode-vs-hf", "decode-backspace-vs-recompute"])
def test_quick_case_builds_and_runs(name):
    assert name in CASES
    case = build_case(name, quick=True)  # raises if the two decoders disagree
    case.a()
    case.b()
    assert case.a_name and case.b_name and case.description
