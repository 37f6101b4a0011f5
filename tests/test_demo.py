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
    assert set(metrics) == {"markov", "sequencematch", "arithmetic", "cat"}
    # the same metrics as the demo printed when it drove the benchmarks through their argv (commit cf29030)
    assert_same(metrics, json.loads((FIXTURES / "demo_quick_metrics.json").read_text()))
    assert {s["method"] for s in metrics["sequencematch"]["summary"]} == {"mle", "bc", "bc_continued",
                                                                          "sequencematch", "tv"}
    assert {r["method"] for r in metrics["arithmetic"]["results"]} == {"mle", "bc", "sequencematch"}
    assert metrics["arithmetic"]["examples"] and "⌫" in "".join(e["actions"] for e in metrics["arithmetic"]["examples"]) \
        or all(not e["repaired"] for e in metrics["arithmetic"]["examples"])
    assert set(metrics["cat"]["key_to_door"]["win_rate"]) == {"cat", "bc", "pct_bc", "random"}
    assert metrics["cat"]["estimation"]["speedup"] > 1
    report = (out / "report.md").read_text()
    for heading in ["Markov oracle", "backspace against compounding error", "SequenceMatch on noisy arithmetic", "Conditional Attribute Transformers",
                    "## Summary"]:
        assert heading in report
    printed = capsys.readouterr().out
    assert "Summary" in printed and "wrote" in printed


def test_demo_unknown_section(tmp_path, capsys):
    assert main(["demo", "--sections", "markov,nope", "--output-dir", str(tmp_path / "d")]) == 2
    assert "unknown demo section" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
