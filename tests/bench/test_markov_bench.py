"""``seqlevel bench markov`` (JSON contract, table, bad input) and ``seqlevel demo`` (files written)."""

from __future__ import annotations

import json
import os

import pytest

from seqlevel.cli import main

TINY = ["bench", "markov", "--vocab-size", "11", "--seeds", "1,2", "--train-size", "400", "--dev-size", "100",
        "--batch-size", "200", "--max-epochs", "2", "--no-progress"]


def test_json_contract(capsys, tmp_path):
    jsonl = tmp_path / "runs.jsonl"
    rc = main(TINY + ["--objectives", "mle,mixce:0.9,mixce_star:0.9,tailr:1e-7", "--json", "--jsonl", str(jsonl)])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    rows = out["results"]
    assert [json.loads(line) for line in jsonl.read_text().splitlines()] == rows  # one line per run
    assert len(rows) == 2 * 4
    required = {"objective": str, "seed": int, "vocab_size": int, "avg_js": float, "avg_zero_mass": float,
                "epochs": int, "seconds": float}
    for r in rows:
        for key, typ in required.items():
            assert isinstance(r[key], typ), (key, r[key])
        assert r["eta"] is None or isinstance(r["eta"], float)
        assert 0.0 <= r["avg_js"] <= 0.6932  # JS divergence in nats is at most log 2
        assert 0.0 <= r["avg_zero_mass"] <= 1.0
        assert 1 <= r["epochs"] <= 2 and r["vocab_size"] == 11
    assert [(r["objective"], r["eta"]) for r in rows[:4]] == [
        ("mle", None), ("mixce", 0.9), ("mixce_star", 0.9), ("tailr", None)]
    assert {r["seed"] for r in rows} == {1, 2}


def test_table_output(capsys):
    assert main(TINY + ["--seeds", "1", "--objectives", "mle,mixce:0.5"]) == 0
    out = capsys.readouterr().out
    assert "avg_js" in out and "mixce:0.5" in out and "best parameter" in out


@pytest.mark.parametrize("bad, msg", [
    (["--objectives", "mle,mixce:1.5"], "eta must be in \\[0, 1\\]"),
    (["--objectives", "mle,bogus"], "unknown objective 'bogus'"),
    (["--objectives", "mixce"], "needs its eta"),
    (["--vocab-size", "2"], "--vocab-size values must be >= 3"),
    (["--vocab-size", "a,b"], "comma list of integers"),
    (["--train-size", "100"], "smaller than one batch"),
])
def test_bad_input_is_one_line_error(bad, msg, capsys):
    assert main(TINY + bad) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-written on stdout
    import re

    assert re.search(msg, captured.err), captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_demo_quick_writes_files(tmp_path):
    from seqlevel.demo import run_demo

    out = tmp_path / "demo"
    assert run_demo(quick=True, output_dir=str(out), sections=("markov",)) == 0
    names = set(os.listdir(out))
    assert {"report.md", "metrics.json", "markov_eta_sweep.png"} <= names
    assert not [n for n in names if ".tmp" in n]  # no temporary leftovers
    metrics = json.loads((out / "metrics.json").read_text())
    assert {r["objective"] for r in metrics["markov"]["results"]} == {"mle", "mixce", "mixce_star"}
    assert "avg_js" in (out / "report.md").read_text()
    assert (out / "markov_eta_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_refuses_a_file_as_output_dir(tmp_path):
    from seqlevel.demo import run_demo

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        run_demo(quick=True, output_dir=str(f))
    assert f.read_text() == "x"
