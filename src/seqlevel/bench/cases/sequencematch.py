"""Cases of SequenceMatch (issues 3, 5 and 8).

* speed ``sm-encoded-vs-mle``: forward + backward of a small Llama on a collated batch of encoded trajectories
  with 30% backspaces (explicit position ids, 4-D mask, χ²-mix loss on half data / half model rows) against plain
  causal MLE forward + backward on the same number of token slots: what the single-pass masking scheme costs.
* speed ``sm-step-vs-mle``: one full :class:`~seqlevel.trainers.SequenceMatchTrainer` optimizer step, rollouts
  amortised, against one MLE step on the same data (see :func:`sm_step_vs_mle`).
* memory ``sequencematch``: ``½ BC + ½ SM`` from one chunked pass over hidden states.

:func:`synthetic_batch` is the one synthetic SequenceMatch batch (also used by ``seqlevel bench gpu``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

import torch

from seqlevel.backspace import Encoded, collate, encode
from seqlevel.bench.cases import SpeedCase, device_sync, random_tokens

Tensor = torch.Tensor


def synthetic_trajectories(B: int, T: int, V: int, *, p_backspace: float, prompt_len: int = 8,
                           seed: int = 0) -> list[Encoded]:
    """``B`` encoded trajectories of exactly ``T`` slots (no padding), ``<bksp>`` = ``V - 1``.

    Each has a random prompt of ``prompt_len`` tokens and ``T - prompt_len`` actions, each ``<bksp>`` with
    probability ``p_backspace`` and otherwise a token in ``[3, V - 1)``; even rows are data, odd rows model rows.
    """
    if not 1 <= prompt_len < T:
        raise ValueError(f"prompt_len must be in [1, T) = [1, {T}), got {prompt_len}")
    rng, bk = random.Random(seed), V - 1
    out = []
    for b in range(B):
        prompt = [rng.randrange(3, bk) for _ in range(prompt_len)]
        acts = [bk if rng.random() < p_backspace else rng.randrange(3, bk) for _ in range(T - prompt_len)]
        out.append(encode(prompt, acts, bk, is_data=b % 2 == 0))
    return out


def synthetic_batch(B: int, T: int, V: int, *, p_backspace: float, prompt_len: int = 8, seed: int = 0,
                    dtype: torch.dtype = torch.float32, mask_format: str = "float") -> dict[str, Tensor]:
    """:func:`synthetic_trajectories` collated (pad id 0): model inputs ``(B, T)`` / ``(B, 1, T, T)`` and loss
    fields, as :func:`seqlevel.backspace.collate` returns them."""
    encs = synthetic_trajectories(B, T, V, p_backspace=p_backspace, prompt_len=prompt_len, seed=seed)
    return collate(encs, pad_id=0, dtype=dtype, mask_format=mask_format)


def sm_encoded_vs_mle(device: str = "cpu", quick: bool = False, mask_format: str = "float") -> SpeedCase:
    """Forward+backward, small Llama: encoded batch with 30% backspaces (A) vs plain causal MLE (B)."""
    from seqlevel.backspace import model_inputs
    from seqlevel.losses import mle_loss, sequencematch_loss
    from seqlevel.presets import tiny_model

    V, B, T = (256, 4, 64) if quick else (2048, 8, 256)
    model = tiny_model("tiny-llama" if quick else "small-llama", vocab_size=V, seed=0,
                       attn_implementation="sdpa").to(device)
    model.train()
    batch = synthetic_batch(B, T, V, p_backspace=0.3, mask_format=mask_format)
    sm_inputs = model_inputs(batch, device=device)
    sm_batch = {k: v.to(device) for k, v in batch.items()}
    ids = random_tokens(B, T, V, low=3, high=V - 1).to(device)

    def encoded_step():
        logits = model(**sm_inputs).logits  # (B, T, V): slot t scores labels[:, t]
        loss = sequencematch_loss(logits, sm_batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    def mle_step():
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V); causal mask built by SDPA (is_causal)
        loss = mle_loss(logits, ids[:, 1:])
        loss.backward()
        model.zero_grad(set_to_none=True)
        return loss

    return SpeedCase(
        a=encoded_step,
        b=mle_step,
        a_name=f"encoded batch ({mask_format} 4-D mask, position ids) + sequencematch_loss fwd+bwd",
        b_name="plain causal batch + mle_loss fwd+bwd",
        description=f"forward+backward, {'tiny' if quick else 'small'}-llama (sdpa), {B}x{T} slots, V={V}, "
                    "30% backspaces",
        sync=device_sync(device),
    )


def sequencematch_memory(hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Callable[[], Tensor]:
    """``½ BC + ½ SM`` (chi2_mix) from hidden states on a synthetic data + model batch of the labels' shape.

    Every slot but the last (a truncated trajectory's final state) is a transition, so every slot needs ``V`` and
    ``Q``: as many projected slots as the MLE has targets.
    """
    from seqlevel.losses.chunked_sequencematch import chunked_sequencematch_loss

    B, T = labels.shape
    batch = synthetic_batch(B, T, weight.shape[0], p_backspace=0.0, prompt_len=1)
    fields = {k: batch[k] for k in ("labels", "valid", "step", "eos_abs", "is_data")}
    return lambda: 0.5 * chunked_sequencematch_loss(hidden, weight, fields, chunk_size=chunk, bc_weight=1.0)


def _sm_step_setup(quick: bool):
    import datasets
    from transformers import PrinterCallback

    from seqlevel.bench.arithmetic import FULL, QUICK
    from seqlevel.presets import tiny_model
    from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict
    from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer

    cfg = QUICK if quick else FULL
    warm = 20 if quick else 150
    train, _ = make_splits(512, 1, seed=0, train_entropy=cfg.entropy, test_entropy=cfg.entropy, bases=cfg.bases)
    tok = arithmetic_tokenizer()
    ds = datasets.Dataset.from_dict(to_dataset_dict(train, tok))
    overrides = dict(cfg.model_overrides)
    model = tiny_model(cfg.preset, tokenizer=tok, seed=0, **overrides)
    args = SequenceMatchConfig(
        output_dir="runs/speed_sm_step", report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
        seed=0, per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, p_noise=0.1,
        noise_type=cfg.noise_type, bc_warmup_steps=warm, max_steps=warm, sm_weight=cfg.sm_weight, gamma=cfg.gamma,
        sample_every=cfg.sample_every, rollouts_per_refresh=cfg.rollouts_per_refresh,
        replay_batch_size=cfg.replay_batch_size, replay_buffer_size=cfg.replay_buffer_size,
        max_new_actions=cfg.max_new_actions, dataloader_drop_last=True)
    trainer = SequenceMatchTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                   noise_fn=task_noise(tok))
    trainer.remove_callback(PrinterCallback)  # stdout carries only the benchmark's result
    # Algorithm 1 reaches the SequenceMatch phase after BC warm-up; a short one makes the rollouts end with <eos>
    # as in training (an untrained model rambles to max_new_actions, which would overstate the cost)
    trainer.train()
    mle_tok = arithmetic_tokenizer()
    mle_model = tiny_model(cfg.preset, tokenizer=mle_tok, seed=0, **overrides)
    return trainer, mle_model, to_dataset_dict(train, mle_tok), cfg


def sm_step_vs_mle(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """One SequenceMatch optimizer step, rollouts amortised (A), vs one MLE step on the same batch (B).

    A = :class:`seqlevel.trainers.SequenceMatchTrainer` in its SequenceMatch phase, exactly as in training: the
    step's batch is built by ``get_batch_samples`` (noise-augmented, encoded data rows + replay rows), the buffer
    is refreshed by the backtracking decoder every ``sample_every`` steps, then forward, ``(1 − w)·BC + w·SM``,
    backward and an AdamW step. The model first gets a short BC warm-up (150 steps, as Algorithm 1's first stage;
    an untrained model's rollouts run to ``max_new_actions``). One timed unit is a whole refresh cycle
    (``sample_every`` steps, exactly one refresh), so the rollouts' cost is amortised exactly rather than dropped
    by the median; B is the same number of MLE steps on the same batches, so the ratio is the per-step ratio.

    B = plain MLE on the same examples, clean (no noise, no ``<bksp>``), the ordinary causal path (padding mask,
    no position ids, loss on the answer tokens): forward, backward and an AdamW step. Both use the same model
    architecture and the arithmetic task (SequenceMatch §6.1).
    """
    if device != "cpu":
        raise ValueError("sm-step-vs-mle runs the CPU benchmark configuration; use --device cpu")
    from seqlevel.losses import mle_loss

    torch.set_num_threads(1)  # as the arithmetic bench: one thread avoids OpenMP spin-waits on a shared machine
    trainer, mle_model, data, cfg = _sm_step_setup(quick)
    model = trainer.model
    model.train()
    mle_model.train()
    sm_opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    mle_opt = torch.optim.AdamW(mle_model.parameters(), lr=cfg.lr)
    loader = trainer.get_train_dataloader()
    batches = itertools.cycle(list(loader))  # the same index batches feed both workloads
    order: list = []

    def sm_step():
        raw = next(batches)
        order.append(raw["sm_index"])
        samples, n = trainer.get_batch_samples(iter([raw]), 1, torch.device("cpu"))
        loss = trainer.training_step(model, samples[0], n)  # forward, (1-w) BC + w SM, backward
        sm_opt.step()
        sm_opt.zero_grad(set_to_none=True)
        trainer.state.global_step += 1  # a refresh every sample_every steps, as in training
        return loss

    pad = 0

    def mle_step(k: int):
        idx = order[k].tolist()
        seqs = [data["prompt_ids"][i] + data["completion_ids"][i] for i in idx]
        plen = [len(data["prompt_ids"][i]) for i in idx]
        T = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), T), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, (s, p) in enumerate(zip(seqs, plen)):
            ids[r, : len(s)], mask[r, : len(s)] = torch.tensor(s), 1
            labels[r, p: len(s)] = torch.tensor(s[p:])  # the answer tokens, as BC/SM train on
        logits = mle_model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = mle_loss(logits, labels[:, 1:])
        loss.backward()
        mle_opt.step()
        mle_opt.zero_grad(set_to_none=True)
        return loss

    k_sample = cfg.sample_every

    def sm_cycle():  # one refresh cycle: sample_every optimizer steps, exactly one of them refreshes the buffer
        del order[:]
        for _ in range(k_sample):
            sm_step()

    def mle_cycle():  # the same batches, MLE; when B runs first in a pair it uses the previous cycle's batches
        if len(order) < k_sample:
            order[:] = [next(batches)["sm_index"] for _ in range(k_sample)]
        for k in range(k_sample):
            mle_step(k)

    return SpeedCase(a=sm_cycle, b=mle_cycle, a_name=f"{k_sample} SequenceMatch steps incl. 1 refresh",
                     b_name=f"{k_sample} MLE steps, same batches", description=(
                         f"arithmetic, {cfg.preset} {dict(cfg.model_overrides)}, batch {cfg.batch_size} data + "
                         f"{cfg.replay_batch_size} replay rows, {cfg.rollouts_per_refresh} rollouts every "
                         f"{cfg.sample_every} steps"))
