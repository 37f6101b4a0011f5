"""seqlevel.data: every dataset format, prompt/completion and chat records, and the one model/tokenizer loader."""

from __future__ import annotations

import json

import datasets
import pytest
import torch

from seqlevel.data import (
    CausalLMCollator,
    load_model_and_tokenizer,
    load_text_dataset,
    render_messages,
    tokenize_dataset,
)
from seqlevel.presets import byte_tokenizer, tiny_model

ROWS = [{"text": "the cat sat", "attribute": 1}, {"text": "a dog ran", "attribute": 0}]
CHAT = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}")


def _write_all(tmp_path):
    """The same two records in every file format; returns {format: path}."""
    import pandas as pd

    paths = {}
    (tmp_path / "d.txt").write_text("the cat sat\n\na dog ran\n")
    paths["txt"] = tmp_path / "d.txt"
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    paths["jsonl"] = tmp_path / "d.jsonl"
    (tmp_path / "list.json").write_text(json.dumps(ROWS))
    paths["json-list"] = tmp_path / "list.json"
    (tmp_path / "cols.json").write_text(json.dumps({"text": [r["text"] for r in ROWS],
                                                    "attribute": [r["attribute"] for r in ROWS]}))
    paths["json-columns"] = tmp_path / "cols.json"
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    paths["csv"] = tmp_path / "d.csv"
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    paths["parquet"] = tmp_path / "d.parquet"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    paths["save_to_disk"] = tmp_path / "saved"
    return paths


def test_every_format_loads_the_same_texts(tmp_path):
    for fmt, path in _write_all(tmp_path).items():
        ds = load_text_dataset(str(path))
        assert ds["text"] == ["the cat sat", "a dog ran"], fmt
        if fmt != "txt":
            assert ds["attribute"] == [1, 0], fmt


def test_split_of_a_saved_dataset_dict(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "test": datasets.Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "s"))
    assert len(load_text_dataset(str(tmp_path / "s"), split="test")) == 1
    with pytest.raises(ValueError, match=r"no 'dev' split; pass --dataset-split one of \['train', 'test'\]"):
        load_text_dataset(str(tmp_path / "s"), split="dev")


@pytest.mark.parametrize("name,content,match", [
    ("bad.txt", b"ok line\n\xff\xfe broken\n", r"'.*bad.txt' is not UTF-8 text: byte 0xff at line 2"),
    ("bin.txt", b"\x00\x01\x02binary", r"'.*bin.txt' looks like a binary file"),
    ("bad.jsonl", b'{"text": "a"}\n{"text": "b"\n', r"'.*bad.jsonl' line 2 is not valid JSON"),
    ("arr.jsonl", b'{"text": "a"}\n[1, 2]\n', r"line 2 is a JSON list, not an object"),
    ("num.json", b"42", r"holds a JSON int"),
    ("empty.txt", b"\n\n", r"is empty"),
    ("bad.csv", b'text\n"unclosed\n', r"not a readable CSV file|is empty"),
    ("bad.parquet", b"not parquet", r"not a readable Parquet file"),
    ("d.xlsx", b"x", r"unsupported dataset file"),
])
def test_bad_files_are_named_with_what_is_wrong(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_text_dataset(str(p))


def test_missing_path_and_offline_hub_name(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="not found: looked for"):
        load_text_dataset(str(tmp_path / "nope.jsonl"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ValueError, match="as a Hub dataset name it needs a connection: downloads are switched off"):
        load_text_dataset("someone/no-such-dataset-xyz")


def test_prompt_completion_puts_the_loss_on_the_completion_only():
    tok = byte_tokenizer()
    ds = datasets.Dataset.from_dict({"prompt": ["Q: 1+1=", "Q: 2+2="], "completion": ["2", "4"]})
    out = tokenize_dataset(ds, tok, max_length=64)
    batch = CausalLMCollator(tok.pad_token_id)([out[0], out[1]])
    n_prompt = len(tok("Q: 1+1=", add_special_tokens=False)["input_ids"])
    labels = batch["labels"][0]
    assert (labels[:n_prompt] == -100).all()
    assert labels[n_prompt:n_prompt + 2].tolist() == [tok("2")["input_ids"][0], tok.eos_token_id]


def test_messages_use_the_chat_template_and_the_reply_is_the_target():
    tok = byte_tokenizer()
    msgs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    ds = datasets.Dataset.from_dict({"messages": msgs})
    with pytest.raises(ValueError, match="has no chat template; use a chat model's tokenizer"):
        tokenize_dataset(ds, tok)
    tok.chat_template = CHAT
    pc = render_messages(ds, tok)
    assert pc[0] == {"prompt": "user: hi\nassistant: ", "completion": "hello\n"}
    out = tokenize_dataset(ds, tok, max_length=64)
    labels = CausalLMCollator(tok.pad_token_id)([out[0]])["labels"][0]
    assert tok.decode([t for t in labels.tolist() if t != -100], skip_special_tokens=True) == "hello\n"
    bad = datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"}]]})
    with pytest.raises(ValueError, match="does not end with an assistant message"):
        render_messages(bad, tok)


def test_truncation_is_reported(caplog):
    tok = byte_tokenizer()
    ds = datasets.Dataset.from_dict({"text": ["x" * 50, "short"]})
    with caplog.at_level("WARNING", logger="seqlevel.data"):
        out = tokenize_dataset(ds, tok, max_length=10)
    assert max(len(x) for x in out["input_ids"]) == 10
    assert "1 of 2 examples are longer than max_length=10" in caplog.text


# ----- the loader --------------------------------------------------------------------------------------------------
def test_loader_errors_name_the_path_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"model path '.*nope' does not exist"):
        load_model_and_tokenizer(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json, so it is not a saved model"):
        load_model_and_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "run" / "checkpoint-4").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"the run did not finish, so pass '.*checkpoint-4'"):
        load_model_and_tokenizer(str(tmp_path / "run"))
    tok = byte_tokenizer()
    tiny_model("tiny-gpt2", tokenizer=tok).save_pretrained(tmp_path / "notok")
    with pytest.raises(ValueError, match="has no tokenizer files"):
        load_model_and_tokenizer(str(tmp_path / "notok"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="as a Hub name it needs a connection: downloads are switched off"):
        load_model_and_tokenizer("someone/no-such-model-xyz")
    with pytest.raises(ValueError, match="did you mean 'tiny-gpt2'"):
        load_model_and_tokenizer("tiny-gpt3")
    with pytest.raises(ValueError, match="holds no attribute head"):
        load_model_and_tokenizer(str(tmp_path / "notok"), attribute=True)


def test_loader_refuses_a_tokenizer_larger_than_the_model(tmp_path):
    small = tiny_model("tiny-gpt2", vocab_size=64)
    small.save_pretrained(tmp_path / "m")
    byte_tokenizer().save_pretrained(tmp_path / "m")  # 259 tokens > 64 rows
    with pytest.raises(ValueError, match=r"has 259 tokens but model '.*m' has only 64 embedding rows"):
        load_model_and_tokenizer(str(tmp_path / "m"))


def test_loader_round_trip(tmp_path):
    tok = byte_tokenizer()
    m = tiny_model("tiny-llama", tokenizer=tok)
    m.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    net, tok2 = load_model_and_tokenizer(str(tmp_path / "m"))
    assert len(tok2) == len(tok)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), m.state_dict().values()))


def test_bom_crlf_and_upper_case_suffix(tmp_path):
    p = tmp_path / "NOTES.TXT"
    p.write_bytes("\ufeffhello\r\nworld\r\n".encode("utf-8"))  # as a Windows editor saves it
    assert load_text_dataset(str(p))["text"] == ["hello", "world"]
