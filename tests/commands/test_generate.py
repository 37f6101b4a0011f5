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
    assert "--top-p must be in (0, 1]" in capsys.readouterr().err
    rc = main(["generate", "--model", "tiny-gpt2", "--prompts", str(prompts), "--max-new-actions", "0"])
    assert rc == 2
    assert "--max-new-actions must be >= 1" in capsys.readouterr().err


# ----- issue 23: prompts the tokenizer cannot encode, <pad> as an action, messages that name the flags, CAT steering -
def _arithmetic_model(tmp_path, favour_pad: bool = False):
    """A saved tiny GPT-2 on the arithmetic tokenizer ('=' is not in its vocabulary); ``favour_pad``: its output
    is a constant state whose most likely next token is <pad>."""
    import torch

    from seqlevel.presets import tiny_model
    from seqlevel.tasks.arithmetic import arithmetic_tokenizer

    tok = arithmetic_tokenizer()
    model = tiny_model("tiny-gpt2", tokenizer=tok, tie_word_embeddings=False)
    if favour_pad:
        with torch.no_grad():
            b = torch.randn(model.config.n_embd)
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(b)  # every hidden state is b
            model.lm_head.weight.mul_(0.01)
            model.lm_head.weight[tok.pad_token_id] = 10 * b / b.dot(b)  # logit of <pad> = 10, the rest ~0
    d = tmp_path / "arith"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_prompt_with_characters_the_tokenizer_cannot_encode_is_refused_naming_them(tmp_path, capsys):
    d = _arithmetic_model(tmp_path)
    capsys.readouterr()  # save_pretrained's progress bar
    p = tmp_path / "p.txt"
    p.write_text("12+34=\n", encoding="utf-8")
    assert main(["generate", "--model", str(d), "--prompts", str(p), "--max-new-actions", "3", "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert "prompt 1 ('12+34=') has characters the tokenizer cannot encode: '='" in err and "--allow-unk" in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("seqlevel generate: error: prompt 1")
    rc = main(["generate", "--model", str(d), "--prompts", str(p), "--max-new-actions", "3", "--seed", "0",
               "--allow-unk", "--json"])
    assert rc == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["text"].startswith("12+34=")  # the prompt as given, never the re-decoded '12+34'


def test_pad_is_never_a_generated_action(tmp_path, capsys):
    d = _arithmetic_model(tmp_path, favour_pad=True)
    capsys.readouterr()
    p = tmp_path / "p.txt"
    p.write_text("12+34\n1-2\n", encoding="utf-8")
    assert main(["generate", "--model", str(d), "--prompts", str(p), "--max-new-actions", "8", "--seed", "0",
                 "--json"]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert all(r["num_actions"] >= 1 and "<pad>" not in r["action_tokens"] for r in records)


def test_temperature_zero_names_the_greedy_flag(tmp_path, capsys):
    p = tmp_path / "p.txt"
    p.write_text("a\n", encoding="utf-8")
    assert main(["generate", "--model", "tiny-gpt2", "--prompts", str(p), "--temperature", "0"]) == 2
    err = capsys.readouterr().err
    assert "--temperature must be > 0 when sampling, got 0.0; for the most likely action pass --greedy" in err
    assert "do_sample" not in err


def _cat_model(tmp_path, kind="categorical", num_classes=3):
    """A saved CAT model (random tiny GPT-2 + a head with large queries, so steering changes the text) whose
    byte-level tokenizer has <bksp>."""
    import torch

    from seqlevel.attributes import AttributeModel
    from seqlevel.backspace.vocab import BACKSPACE_TOKEN
    from seqlevel.presets import byte_tokenizer, tiny_model

    tok = byte_tokenizer(extra_special_tokens=[BACKSPACE_TOKEN])
    torch.manual_seed(0)
    model = AttributeModel.for_base(tiny_model("tiny-gpt2", tokenizer=tok), kind=kind, num_classes=num_classes,
                                    query_std=1.0)
    d = tmp_path / "cat"
    model.save_pretrained(str(d))
    tok.save_pretrained(d)
    return d


def test_cat_steering_from_the_command_line_equals_the_python_api(tmp_path, capsys):
    import torch
    from transformers import AutoTokenizer

    from seqlevel.attributes import AttributeModel
    from seqlevel.attributes.steering import ProductRule
    from seqlevel.decoding import generate

    d = _cat_model(tmp_path)
    capsys.readouterr()
    p = tmp_path / "p.txt"
    p.write_text("good\nbad!\n", encoding="utf-8")
    common = ["generate", "--model", str(d), "--prompts", str(p), "--max-new-actions", "12", "--seed", "3", "--json"]
    assert main([*common, "--steer", "product", "--target", "2", "--target", "1", "--alpha", "4", "--alpha",
                 "1"]) == 0
    cli = [json.loads(x)["actions"] for x in capsys.readouterr().out.splitlines()]

    model, tok = AttributeModel.from_pretrained(str(d)).eval(), AutoTokenizer.from_pretrained(d)
    ids = torch.tensor([tok(t)["input_ids"] for t in ["good", "bad!"]])  # equal lengths: no padding
    out = generate(model.base, ids, max_new_actions=12, eos_token_id=tok.eos_token_id, seed=3,
                   backspace_id=tok.convert_tokens_to_ids("<bksp>"), suppress_ids=[tok.pad_token_id],
                   steer=ProductRule(model, target=[2, 1], alpha=[4.0, 1.0]))
    assert cli == out.actions
    plain = generate(model.base, ids, max_new_actions=12, eos_token_id=tok.eos_token_id, seed=3,
                     backspace_id=tok.convert_tokens_to_ids("<bksp>"), suppress_ids=[tok.pad_token_id])
    assert plain.actions != cli  # the steering did something

    for rule in (["--steer", "satisficing", "--target", "2", "--threshold", "0.3"],
                 ["--steer", "backtrack", "--target", "2", "--threshold", "0.05"]):
        assert main([*common, *rule]) == 0, capsys.readouterr().err
        assert len(capsys.readouterr().out.splitlines()) == 2


def test_cat_steering_errors_are_one_line(tmp_path, capsys):
    from seqlevel.presets import tiny_model

    d = _cat_model(tmp_path)
    capsys.readouterr()
    plain = tmp_path / "plain"
    tiny_model("tiny-gpt2", vocab_size=300).save_pretrained(plain)
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (d / name).exists():
            shutil.copy(d / name, plain / name)
    p = tmp_path / "p.txt"
    p.write_text("a\n", encoding="utf-8")
    capsys.readouterr()
    cases = [
        (["--model", str(plain), "--steer", "product", "--target", "1"], "holds no attribute head"),
        (["--model", str(d), "--steer", "product", "--target", "7"], "target class 7 is not one of the head's classes 0..2"),
        (["--model", str(d), "--steer", "product"], "--steer product needs a --target class"),
        (["--model", str(d), "--target", "1"], "add --steer product, satisficing or backtrack"),
        (["--model", str(d), "--steer", "backtrack", "--target", "1", "--target", "2"], "--steer backtrack takes one"),
        (["--model", str(d), "--steer", "product", "--target", "1", "--threshold", "0.5"],
         "--threshold does nothing with --steer product"),
    ]
    for extra, message in cases:
        assert main(["generate", "--prompts", str(p), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err.strip().splitlines()[-1] and "Traceback" not in err, err
