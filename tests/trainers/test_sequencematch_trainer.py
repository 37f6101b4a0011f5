"""SequenceMatchTrainer: the loss moves, a resumed run reproduces the uninterrupted one, bad input is refused."""

import datasets
import pytest
import torch
from transformers import TrainerCallback

from seqlevel.backspace import collate, model_inputs
from seqlevel.losses import bc_loss, sequencematch_loss
from seqlevel.presets import tiny_model
from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict
from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.fixture(scope="module")
def arith():
    tok = arithmetic_tokenizer()
    train, _ = make_splits(32, 1, seed=0, train_entropy=(2, 3), test_entropy=(2, 3))
    return tok, datasets.Dataset.from_dict(to_dataset_dict(train, tok))


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "out"), report_to="none", max_steps=6, per_device_train_batch_size=8,
                learning_rate=3e-3, logging_steps=1, save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
                bc_warmup_steps=2, sample_every=2, rollouts_per_refresh=8, replay_buffer_size=12,
                replay_batch_size=4, max_new_actions=10, p_noise=0.3, noise_type="task", gamma=0.9)
    base.update(kw)
    return SequenceMatchConfig(**base)


def _trainer(arith, cfg, seed=0):
    tok, ds = arith
    tok = arithmetic_tokenizer()  # a fresh tokenizer: the trainer adds <bksp> to it
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=seed)
    return SequenceMatchTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok,
                                noise_fn=task_noise(tok))


def test_adds_backspace_and_loss_matches_pure_functions(tmp_path, arith):
    tr = _trainer(arith, _cfg(tmp_path))
    assert tr.processing_class.convert_ids_to_tokens(tr.backspace_id) == "<bksp>"
    assert tr.model.get_output_embeddings().weight.shape[0] == len(tr.processing_class)
    tr.refresh_buffer(step=2)
    assert len(tr.replay) > 0 and all(r.born == 2 for r in tr.replay.items)
    enc = tr.data_encoded[:3] + [tr._encoded_rollout(r) for r in list(tr.replay.items)[:2]]
    batch = collate(enc, tr.pad_id)
    batch["sm_weight"] = torch.tensor(0.25)
    tr.model.eval()
    got = tr.compute_loss(tr.model, batch)
    logits = tr.model(**model_inputs(batch)).logits
    ref = 0.75 * bc_loss(logits, batch) + 0.25 * sequencematch_loss(logits, batch, "chi2_mix", 0.9, "absorbing")
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


def test_training_moves_loss_and_logs_statistics(tmp_path, arith):
    tr = _trainer(arith, _cfg(tmp_path, max_steps=8, bc_warmup_steps=0))
    tr.train()
    losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
    assert len(losses) == 8 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.05, losses  # the SequenceMatch + BC loss goes down
    last = [h for h in tr.state.log_history if "loss" in h][-1]
    for key in ("sm/r_mean_data", "sm/r_mean_model", "sm/V_mean_model", "replay/age", "replay/backspace_rate"):
        assert key in last, key
    # one refresh per sample_every optimizer steps (steps 0, 2, 4, 6), never per micro-batch
    assert tr.replay.refreshes == 4


def test_resume_reproduces_uninterrupted_run(tmp_path, arith):
    kw = dict(max_steps=6, save_strategy="steps", save_steps=3, gradient_accumulation_steps=2,
              per_device_train_batch_size=4)
    full = _trainer(arith, _cfg(tmp_path / "a", **kw))
    full.train()
    ref_losses = [h["loss"] for h in full.state.log_history if "loss" in h]
    ref_w = {k: v.clone() for k, v in full.model.state_dict().items()}

    # the interrupted run: same config, stopped after step 3 (the checkpoint), then resumed in a new trainer
    half = _trainer(arith, _cfg(tmp_path / "b", **kw))
    half.add_callback(_StopAt(3))  # same schedule (max_steps=6), killed after the step-3 checkpoint
    half.train()
    resumed = _trainer(arith, _cfg(tmp_path / "b", **kw))
    resumed.train(resume_from_checkpoint=str(tmp_path / "b" / "out" / "checkpoint-3"))
    losses = [h["loss"] for h in resumed.state.log_history if "loss" in h]
    assert losses == pytest.approx(ref_losses, rel=1e-6, abs=1e-7)
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, ref_w[k], rtol=1e-6, atol=1e-7, msg=f"{k} differs after resume")
    assert [r.actions for r in resumed.replay.items] == [r.actions for r in full.replay.items]


def test_bad_input_is_refused(tmp_path, arith):
    tok, ds = arith
    with pytest.raises(ValueError, match="sample_every must be >= 1"):
        _cfg(tmp_path, sample_every=0)
    with pytest.raises(ValueError, match="smaller than one batch"):
        _cfg(tmp_path, replay_buffer_size=2, replay_batch_size=4)
    with pytest.raises(ValueError, match="context is 32 tokens"):
        tok2 = arithmetic_tokenizer()
        model = tiny_model("tiny-gpt2", tokenizer=tok2, n_positions=32)
        SequenceMatchTrainer(model=model, args=_cfg(tmp_path), train_dataset=ds, processing_class=tok2,
                             noise_fn=task_noise(tok2))
    empty = datasets.Dataset.from_dict({"prompt_ids": [[1, 5], [1, 6]], "completion_ids": [[], []]})
    with pytest.raises(ValueError, match="no example has any target token"):
        tok3 = arithmetic_tokenizer()
        SequenceMatchTrainer(model=tiny_model("tiny-gpt2", tokenizer=tok3), args=_cfg(tmp_path, append_eos=False),
                             train_dataset=empty, processing_class=tok3, noise_fn=task_noise(tok3))
    with pytest.raises(ValueError, match="needs SequenceMatchTrainer\\(noise_fn"):
        tok4 = arithmetic_tokenizer()
        SequenceMatchTrainer(model=tiny_model("tiny-gpt2", tokenizer=tok4), args=_cfg(tmp_path), train_dataset=ds,
                             processing_class=tok4)


def test_cli_trains_sequencematch_on_a_text_file(tmp_path):
    from seqlevel.cli import main

    data = tmp_path / "d.txt"
    data.write_text("12+3=15\n7+8=15\n20-5=15\n9+9=18\n")
    out = tmp_path / "run"
    rc = main(["train", "--objective", "sequencematch", "--model", "tiny-gpt2", "--dataset", str(data),
               "--output-dir", str(out), "--max-steps", "3", "--batch-size", "2", "--bc-warmup-steps", "1",
               "--sample-every", "1", "--rollouts-per-refresh", "2", "--replay-buffer-size", "4",
               "--max-new-actions", "8", "--p-noise", "0.2"])
    assert rc == 0
    from transformers import AutoTokenizer

    assert "<bksp>" in AutoTokenizer.from_pretrained(out).get_vocab()
    assert main(["train", "--objective", "sequencematch", "--model", "tiny-gpt2", "--dataset", str(data),
                 "--output-dir", str(tmp_path / "x"), "--sample-every", "0"]) == 2


def test_distributed_settings_are_checked_and_replay_is_saved_per_rank(tmp_path, arith, monkeypatch):
    from types import SimpleNamespace

    cfg = _cfg(tmp_path, rollouts_per_refresh=7)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: 7 rollouts cannot be shared by 2 ranks
    with pytest.raises(ValueError, match="rollouts_per_refresh=7 cannot be shared equally by 2"):
        _trainer(arith, cfg)
    # one process keeps the historical file name; under DDP each rank writes (and resumes from) its own buffer
    name = SequenceMatchTrainer._replay_file
    assert name(SimpleNamespace(args=SimpleNamespace(world_size=1, process_index=0))) == "sequencematch_replay.json"
    assert (name(SimpleNamespace(args=SimpleNamespace(world_size=2, process_index=1)))
            == "sequencematch_replay-rank1.json")


def test_gradient_shares_sum_to_one_and_show_the_absorbing_tail():
    from types import SimpleNamespace

    from seqlevel.backspace import encode
    from seqlevel.trainers.sequencematch import gradient_shares

    BK, EOS = 7, 2
    encs = [encode([1], [3, 4, BK, 5, EOS], BK, eos_id=EOS), encode([1], [3, 6, 6], BK, eos_id=EOS, is_data=False),
            encode([1], [4, BK, 5, EOS], BK, eos_id=EOS, is_data=False)]
    batch = collate(encs, pad_id=0, dtype=torch.float64)
    logits = torch.randn(*batch["labels"].shape, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    args = SimpleNamespace(chi2_weight=0.01, model_reg=None, divergence="chi2_mix")
    _, terms = sequencematch_loss(logits, batch, gamma=0.998, return_terms=True)
    shares = gradient_shares(terms, batch, BK, args)
    for side in ("data", "model"):
        assert sum(shares[f"sm/grad_share_{side}_{k}"] for k in ("token", "bksp", "tail")) == pytest.approx(1.0)
    # at the absorbing tail of a complete trajectory the occupancy weight γ^K/(1 − γ) dominates the data side
    assert shares["sm/grad_share_data_tail"] > 0.9


@pytest.mark.parametrize("preset", ["tiny-gpt2", "tiny-llama"])
def test_step_batches_use_a_bool_mask_under_sdpa_with_identical_logits_and_gradients(tmp_path, arith, preset):
    """The trainer collates with a boolean mask on SDPA (cheaper to read) and the additive float mask on eager;
    on SDPA the two give bit-identical logits and gradients, so the switch changes no number of a run."""
    from seqlevel.trainers.sequencematch import _mask_format

    tok, ds = arith
    tok = arithmetic_tokenizer()
    model = tiny_model(preset, tokenizer=tok, seed=0)
    tr = SequenceMatchTrainer(model=model, args=_cfg(tmp_path), train_dataset=ds, processing_class=tok,
                              noise_fn=task_noise(tok))
    assert _mask_format(tr.model) == "bool"
    assert _mask_format(tiny_model(preset, vocab_size=32, attn_implementation="eager")) == "float"
    tr.state.global_step = tr.args.bc_warmup_steps  # the SequenceMatch phase: data + replay rows
    raw = next(iter(tr.get_train_dataloader()))
    batch = tr.get_batch_samples(iter([raw]), 1, torch.device("cpu"))[0][0]
    assert batch["attention_mask"].dtype == torch.bool and not bool(batch["is_data"].all())
    as_float = collate([tr.data_encoded[int(j)] for j in raw["sm_index"]]
                       + [tr._encoded_rollout(r) for r in _replay_rows(tr, raw)], tr.pad_id)
    assert torch.equal(as_float["attention_mask"] == 0, batch["attention_mask"])
    tr.model.train()
    out = []
    for b in (batch, as_float):
        tr.model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout masks
        logits = tr.model(**model_inputs(b)).logits
        (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
        out.append((logits.detach(), [p.grad.clone() for p in tr.model.parameters()]))
    assert torch.equal(out[0][0], out[1][0])
    assert all(torch.equal(g, h) for g, h in zip(out[0][1], out[1][1]))


def _replay_rows(tr, raw):
    """The replay rows ``get_batch_samples`` draws for the first micro-batch of the current step."""
    import numpy as np

    a = tr.args
    rng = np.random.default_rng([a.seed, a.process_index, tr.state.global_step, 2, 0])
    return tr.replay.sample(a.replay_batch_size, rng)


def test_refresh_under_inference_mode_draws_the_same_rollouts(tmp_path, arith, monkeypatch):
    """The refresh generates under ``torch.inference_mode``; with plain ``no_grad`` it draws the same rollouts,
    and the decoder output handed to the callbacks holds ordinary tensors."""
    seen = []

    class _Grab(TrainerCallback):
        def on_rollouts(self, args, state, control, *, output, **kw):
            seen.append(output)

    runs = []
    for mode in (None, torch.no_grad):
        if mode is not None:
            monkeypatch.setattr(torch, "inference_mode", mode)
        tr = _trainer(arith, _cfg(tmp_path))
        tr.add_callback(_Grab())
        tr.refresh_buffer(step=2)
        runs.append([(r.prompt, r.actions) for r in tr.replay.items])
    assert runs[0] == runs[1] and len(runs[0]) == 8
    assert not seen[0].num_actions.is_inference()
    seen[0].num_actions += 0  # an in-place update works
