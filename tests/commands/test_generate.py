"""``seqlevel generate``: prompts from a file or stdin, text or JSONL out, clear errors."""

from __future__ import annotations

import io
import json

from seqlevel.cli import main


def test_generate_jsonl_from_file(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\nab\n", encoding="utf-8")
    rc = main(["generate", "--model", "tiny-gpt2", "--prompts", str(prompts), "--max-new-actions", "6",
               "--seed", "0", "--json", "--batch-size", "1"])
    assert rc == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in records] == ["hello", "ab"]
    for r in records:
        assert r["num_actions"] == len(r["actions"]) <= 6
        assert r["text"].startswith(r["prompt"])
        assert r["stop_reason"] in {"eos", "max_new_actions"}


def test_generate_text_and_actions_from_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("xy\n"))
    rc = main(["generate", "--model", "tiny-llama", "--max-new-actions", "4", "--greedy", "--show-actions"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("xy") and out[1].startswith("  actions: ")


def test_generate_bad_option_is_one_line_error(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\n", encoding="utf-8")
    rc = main(["generate", "--model", "tiny-gpt2", "--prompts", str(prompts), "--top-p", "1.5"])
    assert rc == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    rc = main(["generate", "--model", "tiny-gpt2", "--prompts", str(prompts), "--max-new-actions", "0"])
    assert rc == 2
    assert "max_new_actions must be >= 1" in capsys.readouterr().err
