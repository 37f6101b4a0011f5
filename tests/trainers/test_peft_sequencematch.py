"""LoRA SequenceMatch on a tiny Llama (the paper's r=64, α=16): the <bksp> rows learn, the base stays frozen, and
the adapter plus the extra rows round-trip through save_pretrained / from_pretrained."""

from __future__ import annotations

import datasets
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from seqlevel.backspace import add_backspace_token
from seqlevel.presets import byte_tokenizer, tiny_model
from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer
from seqlevel.trainers.peft import backspace_lora_config, check_rows_trainable


def _base(tok):
    model = tiny_model("tiny-llama", tokenizer=tok, seed=0)
    return model, add_backspace_token(model, tok)


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.slow
def test_lora_sequencematch_learns_backspace_row_and_round_trips(tmp_path):
    tok = byte_tokenizer()
    model, b = _base(tok)
    cfg = backspace_lora_config(model, b)  # r=64, lora_alpha=16
    assert (cfg.r, cfg.lora_alpha) == (64, 16)
    probe = torch.tensor([tok("q3:1 ab", add_special_tokens=False)["input_ids"]])
    before = _logits(model, probe)[0, :, b]  # (T,) the <bksp> logit along a prefix
    ds = datasets.Dataset.from_dict({"prompt": [f"q{i}:" for i in range(8)],
                                     "completion": [f"{i % 5} ab{'c' * (i % 3)}" for i in range(8)]})
    args = SequenceMatchConfig(output_dir=str(tmp_path / "run"), report_to="none", max_steps=4,
                               per_device_train_batch_size=4, learning_rate=5e-2, logging_steps=1,
                               save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
                               dataloader_pin_memory=False, bc_warmup_steps=2, sample_every=1,
                               rollouts_per_refresh=4, replay_buffer_size=4, replay_batch_size=2, max_new_actions=6,
                               p_noise=0.4, gamma=0.9)
    tr = SequenceMatchTrainer(model, args=args, train_dataset=ds, processing_class=tok, peft_config=cfg)
    pm = tr.model
    frozen = {n: p.detach().clone() for n, p in pm.named_parameters() if not p.requires_grad}
    assert frozen  # the base is frozen, checked unchanged after training below
    assert isinstance(pm, PeftModel)
    check_rows_trainable(pm, b)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "token_adapter" in n for n in trainable), trainable
    rows0 = {n: p.detach().clone() for n, p in pm.named_parameters() if "trainable_tokens_delta" in n}
    tr.train()

    after = _logits(pm, probe)[0, :, b]
    assert any("lm_head" in n for n in rows0) and any("embed_tokens" in n for n in rows0)
    # the <bksp> output row moved; the input row gets no gradient here, because the single-pass encoding (§4.3)
    # never feeds <bksp> as an input (a backspace is a mask and position-id edit), so only the head row is asserted
    moved = {n: float((p.detach() - rows0[n]).abs().max()) for n, p in pm.named_parameters() if n in rows0}
    assert all(v > 1e-4 for n, v in moved.items() if "lm_head" in n), moved
    assert (after - before).abs().max() > 1e-3, "the <bksp> logit did not move"
    for n, p in pm.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), f"base weight {n} changed"

    pm.save_pretrained(str(tmp_path / "adapter"))
    fresh, b2 = _base(byte_tokenizer())
    assert b2 == b
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"))
    torch.testing.assert_close(_logits(loaded, probe), _logits(pm, probe), atol=1e-5, rtol=0)
    full = torch.tensor([list(range(0, 250, 7))])
    torch.testing.assert_close(_logits(loaded, full), _logits(pm, full), atol=1e-5, rtol=0)


def test_peft_config_without_token_rows_gets_the_backspace_rows():
    """A plain LoraConfig (no trainable_token_indices) still trains <bksp>: the trainer adds its rows to a copy."""
    tok = byte_tokenizer()
    model = tiny_model("tiny-llama", tokenizer=tok, seed=0)
    ds = datasets.Dataset.from_dict({"prompt": ["q1:", "q2:"], "completion": ["1 ab", "2 ab"]})
    args = SequenceMatchConfig(output_dir="unused", report_to="none", use_cpu=True, per_device_train_batch_size=2,
                               rollouts_per_refresh=2, replay_buffer_size=2, max_new_actions=4)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    tr = SequenceMatchTrainer(model, args=args, train_dataset=ds, processing_class=tok, peft_config=cfg)
    assert isinstance(tr.model, PeftModel) and cfg.trainable_token_indices is None  # the user's config is untouched
    check_rows_trainable(tr.model, tr.backspace_id)
    with pytest.raises(ValueError, match="already a PeftModel"):
        SequenceMatchTrainer(get_peft_model(tiny_model("tiny-llama", tokenizer=tok, seed=0), cfg), args=args,
                             train_dataset=ds, processing_class=tok, peft_config=cfg)
