"""The sm-encoded-vs-mle speed case builds and runs once (quick size); timing itself is a benchmark, not a test."""

from __future__ import annotations

import math

from seqlevel.bench.speed import CASES, build_case
from seqlevel.bench.speed_cases_sm import _trajectories


def test_quick_case_builds_and_runs():
    assert "sm-encoded-vs-mle" in CASES
    case = build_case("sm-encoded-vs-mle", quick=True)
    assert math.isfinite(case.a().item()) and math.isfinite(case.b().item())
    assert case.a_name and case.b_name and case.description


def test_workload_has_backspaces_and_no_padding():
    encs = _trajectories(B=4, T=64, V=256, bk=255, p_bksp=0.3)
    assert all(len(e) == 64 for e in encs)  # same number of slots as the MLE batch
    frac = sum(int((e.actions == 255).sum()) for e in encs) / sum(len(e.actions) for e in encs)
    assert 0.2 < frac < 0.4
