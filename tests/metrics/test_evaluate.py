"""`seqlevel evaluate`: metrics.json/report.md contract and bad input (missing model, prompt too long, no mauve)."""

import builtins
import json

import pytest

from seqlevel.cli import main

LINES = ["the quick brown fox jumps over the lazy dog", "hello world this is a longer line of text",
         "sequence level training is fun on cpus", "another example sentence with characters"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, byte_tok):
    from seqlevel.presets import tiny_model

    d = tmp_path_factory.mktemp("m")
    tiny_model("tiny-gpt2", tokenizer=byte_tok).save_pretrained(d)
    byte_tok.save_pretrained(d)
    data = d / "data.txt"
    data.write_text("\n".join(LINES) + "\n")
    return d, data


def test_evaluate_writes_metrics_and_report(saved_model, tmp_path, capsys):
    model, data = saved_model
    out = tmp_path / "ev"
    rc = main(["evaluate", "--model", str(model), "--data", str(data), "--prompt-tokens", "8", "--num-samples", "4",
               "--max-new-actions", "12", "--output-dir", str(out), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((out / "metrics.json").read_text())
    assert printed == saved
    for key in ["perplexity", "diversity_mixce", "diversity_simctg", "rep_2", "mauve", "length", "num_samples"]:
        assert key in saved
    assert saved["num_samples"] == 4
    m = saved["mauve"]  # issue 17: mean ± std over k-means seeds, truncation length and featurizer recorded
    assert 0 < m["mean"] <= 1 and m["std"] >= 0 and m["seeds"] == [0, 1, 2, 3, 4]
    assert m["max_tokens"] >= 1 and m["featurizer"] == str(model) and m["feature_dim"] == 32
    report = (out / "report.md").read_text()
    assert "| MAUVE |" in report
    # 4 samples per side: the report says why instead of printing the number
    assert not m["meaningful"] and "| MAUVE | not reported: too few samples" in report
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_missing_model_path_says_what_was_looked_for(saved_model, tmp_path, capsys):
    _, data = saved_model
    rc = main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(data), "--no-mauve"])
    assert rc == 2 and "does not exist: looked for a directory with config.json" in capsys.readouterr().err


def test_prompt_longer_than_data(saved_model, tmp_path, capsys):
    model, data = saved_model
    rc = main(["evaluate", "--model", str(model), "--data", str(data), "--prompt-tokens", "999", "--no-mauve",
               "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "longer than the data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_mauve_missing_names_the_extra(saved_model, tmp_path, capsys, monkeypatch):
    model, data = saved_model
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "mauve":
            raise ImportError("No module named 'mauve'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    rc = main(["evaluate", "--model", str(model), "--data", str(data), "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "pip install 'seqlevel[eval]'" in capsys.readouterr().err
