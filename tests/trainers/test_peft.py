"""LoRA with the <bksp> rows trainable: only adapter + new rows train, the rows learn, bad configs are refused."""

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model

from seqlevel.backspace import add_backspace_token
from seqlevel.presets import byte_tokenizer, tiny_model
from seqlevel.trainers import MixCEConfig, MixCETrainer
from seqlevel.trainers.peft import backspace_lora_config, check_rows_trainable, qlora_quantization_config


@pytest.mark.parametrize("preset", ["tiny-llama", "tiny-gpt2"])
def test_lora_trains_backspace_rows_and_freezes_base(tmp_path, preset):
    tok = byte_tokenizer()
    model = tiny_model(preset, tokenizer=tok)
    b = add_backspace_token(model, tok)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    head_before = model.get_output_embeddings().weight[b].clone()
    cfg = backspace_lora_config(model, b, r=4, lora_alpha=8)
    # data that uses <bksp> as a target, so its rows get gradient
    texts = ["ab<bksp>c", "xy<bksp>z", "q<bksp>r"] * 4
    data = datasets.Dataset.from_dict({"text": texts})
    args = MixCEConfig(output_dir=str(tmp_path), report_to="none", max_steps=5, per_device_train_batch_size=4,
                       learning_rate=5e-2, save_strategy="no", use_cpu=True, disable_tqdm=True,
                       dataloader_pin_memory=False, objective="mle")
    tr = MixCETrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=cfg)
    check_rows_trainable(tr.model, b)
    tr.train()
    merged = tr.model.merge_and_unload()
    assert not torch.allclose(merged.get_output_embeddings().weight[b], head_before), "the <bksp> row did not learn"
    # every base weight other than the <bksp> rows and LoRA-merged linears is unchanged; embeddings keep old rows
    emb = merged.get_input_embeddings().weight
    name = [k for k in base if k.endswith(("embed_tokens.weight", "wte.weight"))][0]
    torch.testing.assert_close(emb[:b], base[name][:b])


def test_plain_lora_that_freezes_the_rows_is_refused():
    tok = byte_tokenizer()
    model = tiny_model("tiny-llama", tokenizer=tok)
    b = add_backspace_token(model, tok)
    pm = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    with pytest.raises(ValueError, match=r"freezes input embedding row .* output head row .*backspace_lora_config"):
        check_rows_trainable(pm, b)


def test_config_for_token_outside_vocab():
    tok = byte_tokenizer()
    model = tiny_model("tiny-gpt2", tokenizer=tok)
    with pytest.raises(ValueError, match="outside the model's vocabulary.*add_backspace_token"):
        backspace_lora_config(model, 10_000)


def test_qlora_config_builds():
    cfg = qlora_quantization_config()
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4"
