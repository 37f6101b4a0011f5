"""add_backspace_token: tied (GPT-2) and untied (Llama) embeddings, mean init, idempotent."""

from __future__ import annotations

import pytest
import torch

from seqlevel.backspace import add_backspace_token, collate, encode, model_inputs
from seqlevel.presets import char_tokenizer, tiny_model


def _tok():
    return char_tokenizer("0123456789+-")  # a fresh tokenizer per test: add_backspace_token mutates it


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
def test_adds_token_and_initialises_rows_to_the_mean(preset):
    tok = _tok()
    model = tiny_model(preset, tokenizer=tok).eval()
    n = len(tok)
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == (preset == "tiny-gpt2")

    bk = add_backspace_token(model, tok)

    assert bk == n and len(tok) == n + 1 and tok.convert_ids_to_tokens(bk) == "<bksp>"
    assert model.config.vocab_size == n + 1
    w_in, w_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert w_in.shape[0] == w_out.shape[0] == n + 1
    torch.testing.assert_close(w_in[:n], old_in)  # existing rows untouched
    torch.testing.assert_close(w_out[:n], old_out)
    torch.testing.assert_close(w_in[bk], old_in.mean(0))
    torch.testing.assert_close(w_out[bk], old_out.mean(0))
    assert (w_out.data_ptr() == w_in.data_ptr()) == tied  # tying preserved
    # the new logit is the mean logit, so P(<bksp>) <= 1/(|V|+1) (Jensen) and of that order
    with torch.no_grad():
        probs = model(input_ids=torch.tensor([tok.encode("12+3")])).logits.softmax(-1)[0, :, bk]
    assert (probs <= 1.0 / (n + 1) + 1e-6).all() and (probs > 0.2 / (n + 1)).all()


def test_existing_token_leaves_tokenizer_and_model_unchanged():
    tok = _tok()
    model = tiny_model("tiny-llama", tokenizer=tok)
    bk = add_backspace_token(model, tok)
    vocab = dict(tok.get_vocab())
    weight = model.get_output_embeddings().weight.detach().clone()
    assert add_backspace_token(model, tok) == bk
    assert tok.get_vocab() == vocab and len(tok) == bk + 1
    assert torch.equal(model.get_output_embeddings().weight, weight)


def test_model_smaller_than_tokenizer_is_resized():
    tok = _tok()
    add_backspace_token(tiny_model("tiny-gpt2", tokenizer=tok), tok)  # the tokenizer already has <bksp>
    fresh = tiny_model("tiny-gpt2", vocab_size=len(tok) - 1)
    bk = add_backspace_token(fresh, tok)
    assert fresh.get_output_embeddings().weight.shape[0] == bk + 1


def test_normal_init_and_bad_init():
    tok = _tok()
    model = tiny_model("tiny-llama", tokenizer=tok)
    bk = add_backspace_token(model, tok, init="normal")
    assert model.get_input_embeddings().weight[bk].std() < 0.1
    with pytest.raises(ValueError, match="init must be"):
        add_backspace_token(tiny_model("tiny-llama", tokenizer=_tok()), _tok(), init="zeros")


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
def test_resized_model_runs_on_an_encoded_batch(preset):
    tok = _tok()
    model = tiny_model(preset, tokenizer=tok).eval()
    bk = add_backspace_token(model, tok)
    ids = tok.encode("12+34")
    batch = collate([encode(ids[:1], ids[1:] + [bk, bk] + tok.encode("4"), bk)], pad_id=tok.pad_token_id)
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()
