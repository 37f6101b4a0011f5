"""Shared-prefix forward (seqlevel.trainers.prefix) against the plain full-batch forward."""

import datasets
import pytest
import torch

from seqlevel.backspace import collate, encode, model_inputs
from seqlevel.presets import tiny_model
from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict
from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer
from seqlevel.trainers.prefix import prefix_skip_reason, shared_prefix_forward, shared_prefix_length

RTOL, ATOL = 1e-5, 1e-6  # float32; the shared path only changes the summation order of the prefix's gradients
NO_DROPOUT = {"tiny-gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0), "tiny-llama": {}}


@pytest.fixture(scope="module")
def arith():
    train, _ = make_splits(32, 1, seed=0, train_entropy=(2, 3), test_entropy=(2, 3))
    return to_dataset_dict(train, arithmetic_tokenizer())


def _trainer(tmp_path, arith, preset, attn="sdpa", share=True, **overrides):
    tok = arithmetic_tokenizer()  # a fresh tokenizer: the trainer adds <bksp> to it
    model = tiny_model(preset, tokenizer=tok, seed=0, attn_implementation=attn, **overrides)
    args = SequenceMatchConfig(
        output_dir=str(tmp_path / "out"), report_to="none", max_steps=6, per_device_train_batch_size=8,
        save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, bc_warmup_steps=2, sample_every=2,
        rollouts_per_refresh=8, replay_buffer_size=12, replay_batch_size=4, max_new_actions=10, p_noise=0.3,
        noise_type="task", gamma=0.9, share_prompt_prefix=share)
    return SequenceMatchTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict(arith),
                                processing_class=tok, noise_fn=task_noise(tok))


def _sm_batch(tr):
    """A SequenceMatch-phase micro-batch (data rows with task noise + replay rows) as get_batch_samples builds it."""
    tr.state.global_step = tr.args.bc_warmup_steps
    raw = next(iter(tr.get_train_dataloader()))
    batches, _ = tr.get_batch_samples(iter([raw]), 1, torch.device("cpu"))
    return batches[0]


def _loss_and_grads(tr, batch):
    tr.model.zero_grad(set_to_none=True)
    loss = tr.compute_loss(tr.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
def test_shared_prefix_matches_the_full_batch_forward(tmp_path, arith, preset, attn):
    """Logits at every slot a loss reads, the ``(1 − w)·BC + w·SM`` loss and every parameter gradient of the
    shared-prefix path equal the plain forward's to rtol 1e-5 / atol 1e-6 (float32), in training mode."""
    tr = _trainer(tmp_path, arith, preset, attn, **NO_DROPOUT[preset])
    batch = _sm_batch(tr)
    assert not bool(batch["is_data"].all()) and bool(batch["sm_weight"] > 0)  # data + replay rows, SM on
    tr.model.train()
    assert prefix_skip_reason(tr.model) is None
    L = shared_prefix_length(batch)
    assert L >= 4  # "<bos>In base " at least

    read = batch["valid"] | batch["eos_abs"] | (batch["labels"] != -100)
    assert not bool(read[:, :L].any())  # no loss term reads a prefix slot
    full = tr.model(**model_inputs(batch), use_cache=False).logits
    shared = shared_prefix_forward(tr.model, model_inputs(batch), L)
    torch.testing.assert_close(shared[read], full[read], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(shared, full, rtol=RTOL, atol=ATOL)

    loss_on, grads_on = _loss_and_grads(tr, batch)
    tr.args.share_prompt_prefix = False
    loss_off, grads_off = _loss_and_grads(tr, batch)
    torch.testing.assert_close(loss_on, loss_off, rtol=RTOL, atol=ATOL)
    assert grads_on.keys() == grads_off.keys() and len(grads_on) == len(list(tr.model.parameters()))
    for name in grads_off:
        torch.testing.assert_close(grads_on[name], grads_off[name], rtol=RTOL, atol=ATOL, msg=name)


def test_compute_loss_takes_the_shared_path_only_when_it_applies(tmp_path, arith, monkeypatch):
    """On by default for a dropout-free model; off with the knob, under active dropout, and for short prefixes."""
    import seqlevel.trainers.sequencematch as sm

    calls = []
    monkeypatch.setattr(sm, "shared_prefix_forward", lambda *a: calls.append(a[2]) or shared_prefix_forward(*a))
    tr = _trainer(tmp_path, arith, "tiny-llama")
    batch = _sm_batch(tr)
    tr.model.train()
    tr.compute_loss(tr.model, batch)
    assert calls == [shared_prefix_length(batch)]
    tr.args.share_prompt_prefix = False
    tr.compute_loss(tr.model, batch)
    assert len(calls) == 1

    gpt = _trainer(tmp_path, arith, "tiny-gpt2")  # GPT-2's default dropout 0.1
    gpt.model.train()
    assert "dropout" in prefix_skip_reason(gpt.model)
    gpt.compute_loss(gpt.model, _sm_batch(gpt))
    assert len(calls) == 1
    gpt.model.eval()  # no dropout in eval mode: the shared path is exact again
    assert prefix_skip_reason(gpt.model) is None
    assert "gradient checkpointing" in prefix_skip_reason(gpt.model, gradient_checkpointing=True)
    assert "processes" in prefix_skip_reason(gpt.model, world_size=2)
    assert "PreTrainedModel" in prefix_skip_reason(torch.nn.Linear(2, 2))


def test_shared_prefix_length_stops_at_the_first_difference_and_the_first_read_slot():
    BK, EOS = 9, 2
    same = [1, 3, 4, 5, 6, 7]
    batch = collate([encode(same + [8], [3, 4, EOS], BK, eos_id=EOS),
                     encode(same + [7, 7], [3, BK, EOS], BK, eos_id=EOS, is_data=False)], pad_id=0)
    assert shared_prefix_length(batch) == 6  # the ids differ at slot 6
    batch = collate([encode(same + [8], [3, 4, EOS], BK, eos_id=EOS),
                     encode(same + [8, 7], [3, EOS], BK, eos_id=EOS)], pad_id=0)
    assert shared_prefix_length(batch) == 6  # the first row's slot 6 scores its first action
    batch = collate([encode(same, [3, EOS], BK, eos_id=EOS), encode(same, [4, EOS], BK, eos_id=EOS)], pad_id=0,
                    mask_format="bool")
    assert shared_prefix_length(batch) == 5
    batch["attention_mask"][1, 0, 3, 1] = False  # slot 3 of row 1 no longer attends causally
    assert shared_prefix_length(batch) == 3
    batch = collate([encode(same, [3, EOS], BK, eos_id=EOS)], pad_id=0)  # additive float mask
    assert shared_prefix_length(batch) == 5
    batch["attention_mask"][0, 0, 4, 2] = torch.finfo(torch.float32).min
    assert shared_prefix_length(batch) == 4
    batch["position_ids"][0, 2] = 7
    assert shared_prefix_length(batch) == 2
