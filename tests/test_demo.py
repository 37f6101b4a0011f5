"""`seqlevel demo --quick`: every section runs and the report, metrics and pictures are written whole."""

import json
import os

import pytest

from seqlevel.cli import main
from tests.bench.test_json_unchanged import FIXTURES, assert_same


@pytest.mark.slow
def test_demo_quick_all_sections(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output-dir", str(out)]) == 0
    names = set(os.listdir(out))
    assert {"report.md", "metrics.json", "markov_eta_sweep.png", "sequencematch_markov.png", "cat_credit.png"} <= names
    assert not [n for n in names if ".tmp" in n]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"markov", "sequencematch", "cat"}  # arithmetic is opt-in (issue 21)
    # the same metrics as the fixture (written by the argv-driven demo at commit cf29030, then rewritten where a
    # section was meant to change: issue 21's SequenceMatch section at noise coverage 0.5)
    assert_same(metrics, json.loads((FIXTURES / "demo_quick_metrics.json").read_text()))
    assert {s["method"] for s in metrics["sequencematch"]["summary"]} == {"mle", "bc", "bc_continued",
                                                                          "sequencematch", "tv"}
    assert metrics["sequencematch"]["config"]["noise_coverage"] == 0.5
    for s in metrics["sequencematch"]["summary"]:
        assert s["uncovered_rate"] is not None and s["covered_rate"] is not None
        assert (s["p_bksp_uncovered"] is None) == (s["method"] == "mle")  # mle has no <bksp>
    assert set(metrics["cat"]["key_to_door"]["win_rate"]) == {"cat", "bc", "pct_bc", "random"}
    assert metrics["cat"]["estimation"]["speedup"] > 1
    report = (out / "report.md").read_text()
    for heading in ["Markov oracle", "backspace against compounding error", "Conditional Attribute Transformers",
                    "## Summary", "π(⌫) after uncovered"]:
        assert heading in report
    assert "SequenceMatch on noisy arithmetic" not in report
    printed = capsys.readouterr().out
    assert "Summary" in printed and "wrote" in printed


def test_demo_unknown_section(tmp_path, capsys):
    assert main(["demo", "--sections", "markov,nope", "--output-dir", str(tmp_path / "d")]) == 2
    assert "unknown demo section" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
