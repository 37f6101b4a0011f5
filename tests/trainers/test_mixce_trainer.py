"""MixCETrainer: the objective reaches the weights, gradient accumulation is exact, bad input is refused."""

import copy

import datasets
import pytest
import torch

from seqlevel.losses import mixce_loss
from seqlevel.trainers import CausalLMCollator, MixCEConfig, MixCETrainer

TEXTS = ["abc abc", "hello world", "xyz", "the cat sat", "a b c d e", "zzz yyy", "mixce", "seq level"]


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), report_to="none", max_steps=2, per_device_train_batch_size=4,
                learning_rate=1e-2, logging_steps=1, save_strategy="no", use_cpu=True, seed=0,
                dataloader_drop_last=False, disable_tqdm=True)
    base.update(kw)
    return MixCEConfig(**base)


def test_compute_loss_equals_pure_function(tmp_path, byte_tok, make_model):
    model = make_model("tiny-gpt2", tokenizer=byte_tok)
    ds = datasets.Dataset.from_dict({"text": TEXTS})
    tr = MixCETrainer(model=model, args=_cfg(tmp_path, mixce_eta=0.3), train_dataset=ds, processing_class=byte_tok)
    batch = CausalLMCollator(byte_tok.pad_token_id)([tr.train_dataset[i] for i in range(4)])
    got = tr.compute_loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ref = mixce_loss(logits[:, :-1], batch["labels"][:, 1:], 0.3)
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    # <eos> is appended and trained even though it is also a special token
    assert all(ids[-1] == byte_tok.eos_token_id for ids in tr.train_dataset["input_ids"])


@pytest.mark.parametrize("objective", ["mle", "mixce", "tailr", "dft"])
def test_training_moves_weights_and_logs_loss(tmp_path, byte_tok, make_model, objective):
    model = make_model("tiny-llama", tokenizer=byte_tok)
    before = copy.deepcopy(model.state_dict())
    ds = datasets.Dataset.from_dict({"text": TEXTS})
    tr = MixCETrainer(model=model, args=_cfg(tmp_path, objective=objective), train_dataset=ds, processing_class=byte_tok)
    out = tr.train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "no parameter changed"


def test_gradient_accumulation_matches_full_batch(tmp_path, byte_tok, make_model):
    # batch 4 x accum 1 and batch 2 x accum 2 give the same weights after one step (loss ÷ tokens of the step)
    ds = datasets.Dataset.from_dict({"text": TEXTS[:4]})
    weights = []
    for bs, ga in [(4, 1), (2, 2)]:
        model = make_model("tiny-gpt2", tokenizer=byte_tok, seed=3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        cfg = _cfg(tmp_path / f"{bs}", per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1,
                   optim="sgd", learning_rate=0.5, mixce_eta=0.2)
        tr = MixCETrainer(model=model, args=cfg, train_dataset=ds, processing_class=byte_tok)
        tr.train()
        weights.append(model.transformer.wte.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], atol=1e-6, rtol=1e-5)


def test_input_ids_dataset_is_accepted(tmp_path, byte_tok, make_model):
    ds = datasets.Dataset.from_dict({"input_ids": [[5, 6, 7], [8, 9]]})
    tr = MixCETrainer(model=make_model(tokenizer=byte_tok), args=_cfg(tmp_path, max_length=3), train_dataset=ds,
                      processing_class=byte_tok)
    assert tr.train_dataset["input_ids"] == [[5, 6, byte_tok.eos_token_id], [8, 9, byte_tok.eos_token_id]]


# ---- bad input ---------------------------------------------------------------------------------------

def test_bad_eta(tmp_path):
    with pytest.raises(ValueError, match=r"mixce_eta must be in \[0, 1\], got 1.5; eta=1 is plain MLE"):
        _cfg(tmp_path, mixce_eta=1.5)


def test_unknown_objective(tmp_path):
    with pytest.raises(ValueError, match="objective must be one of"):
        _cfg(tmp_path, objective="mixe")


def test_output_dir_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file; pass a directory"):
        MixCEConfig(output_dir=str(f))


def test_empty_dataset(tmp_path, byte_tok, make_model):
    with pytest.raises(ValueError, match="train_dataset is empty"):
        MixCETrainer(model=make_model(tokenizer=byte_tok), args=_cfg(tmp_path),
                     train_dataset=datasets.Dataset.from_dict({"text": []}), processing_class=byte_tok)
    assert not (tmp_path / "out").exists(), "nothing may be written for bad input"


def test_dataset_without_usable_column(tmp_path, byte_tok, make_model):
    with pytest.raises(ValueError, match="needs 'text'.*or 'input_ids'"):
        MixCETrainer(model=make_model(tokenizer=byte_tok), args=_cfg(tmp_path),
                     train_dataset=datasets.Dataset.from_dict({"body": ["a"]}), processing_class=byte_tok)


def test_examples_longer_than_the_context_are_truncated_not_crashed(tmp_path):
    """Python API: max_length (512) beyond a 256-position model is cut to the context at data preparation."""
    import datasets

    from seqlevel.presets import byte_tokenizer, tiny_model
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    tok = byte_tokenizer()
    ds = datasets.Dataset.from_dict({"text": ["x" * 600, "short"]})
    args = MixCEConfig(output_dir=str(tmp_path / "o"), max_steps=1, report_to="none", save_strategy="no")
    tr = MixCETrainer(model=tiny_model("tiny-gpt2", tokenizer=tok), args=args, train_dataset=ds,
                      processing_class=tok)
    assert max(len(x) for x in tr.train_dataset["input_ids"]) == 256
    tr.train()
