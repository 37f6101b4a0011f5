"""``seqlevel evaluate`` on data longer than the model's context: perplexity over what fits, no IndexError."""

import json

import pytest

from seqlevel.cli import main


def test_examples_longer_than_the_context_are_evaluated(tmp_path, capsys):
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"text": f"word{i} " * 100}) + "\n" for i in range(3)))  # 700 bytes > 256
    assert main(["evaluate", "--model", "tiny-gpt2", "--data", str(data), "--no-mauve", "--num-samples", "3",
                 "--prompt-tokens", "10", "--max-new-actions", "4", "--output-dir", str(tmp_path / "ev"),
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["perplexity"] > 1 and metrics["perplexity_unit"] == "per token"


# ----- issue 23: evaluate reads what train reads; a bad featurizer fails before generating; no empty heading -------
def _run(tmp_path, capsys, data, *extra):
    rc = main(["evaluate", "--model", "tiny-gpt2", "--data", str(data), "--no-mauve", "--num-samples", "4",
               "--prompt-tokens", "4", "--max-new-actions", "4", "--output-dir", str(tmp_path / "ev"), *extra])
    return rc, capsys.readouterr()


def test_text_field_prompt_completion_and_chat_records(tmp_path, capsys):
    body = tmp_path / "body.jsonl"
    body.write_text("".join(json.dumps({"body": f"review number {i} was fine"}) + "\n" for i in range(3)))
    rc, res = _run(tmp_path, capsys, body, "--text-field", "body", "--json")
    assert rc == 0, res.err
    assert json.loads(res.out.splitlines()[-1])["num_samples"] == 3

    pc = tmp_path / "pc.jsonl"
    pc.write_text("".join(json.dumps({"prompt": f"{i}+1=", "completion": str(i + 1)}) + "\n" for i in range(3)))
    rc, res = _run(tmp_path, capsys, pc, "--json")
    assert rc == 0, res.err
    metrics = json.loads(res.out.splitlines()[-1])
    assert metrics["num_samples"] == 3 and metrics["prompts"] == "the records' prompts"

    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                     {"role": "assistant", "content": "hello"}]}) + "\n"
                            for _ in range(2)))
    rc, res = _run(tmp_path, capsys, chat)
    assert rc == 2 and "has no chat template" in res.err  # read as train reads it (the preset has no template)


def test_report_on_stdout_has_no_empty_examples_heading(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("".join(f"line {i} of some text here\n" for i in range(3)))
    rc, res = _run(tmp_path, capsys, data)
    assert rc == 0, res.err
    assert "## Examples" not in res.out
    assert "## Examples" in (tmp_path / "ev" / "report.md").read_text()  # the file keeps its examples


def test_a_featurizer_that_cannot_load_fails_before_generating(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mauve")
    import seqlevel.decoding.decoder as dec

    calls = []
    monkeypatch.setattr(dec, "generate", lambda *a, **k: calls.append(1))
    data = tmp_path / "d.txt"
    data.write_text("".join(f"line {i} of some text here\n" for i in range(3)))
    rc = main(["evaluate", "--model", "tiny-gpt2", "--data", str(data), "--featurizer", "gpt2-not-here",
               "--num-samples", "3", "--prompt-tokens", "2", "--output-dir", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc == 2 and "could not load model 'gpt2-not-here'" in err and not calls
