"""Speed case ``sm-step-vs-mle``: one full SequenceMatch optimizer step against one MLE step on the same data.

A = :class:`seqlevel.trainers.SequenceMatchTrainer` in its SequenceMatch phase, exactly as in training: the
step's batch is built by ``get_batch_samples`` (noise-augmented, encoded data rows + replay rows), the buffer is
refreshed by the backtracking decoder every ``sample_every`` steps, then forward, ``(1 − w)·BC + w·SM``, backward
and an AdamW step. The model first gets a short BC warm-up (150 steps, as
Algorithm 1's first stage; an untrained model's rollouts run to ``max_new_actions``). One timed unit is a whole
refresh cycle (``sample_every`` steps, exactly one refresh), so the
rollouts' cost is amortised exactly rather than dropped by the median; B is the same number of MLE steps on the
same batches, and the reported ratio is therefore the per-step ratio.

B = plain MLE on the same examples, clean (no noise, no ``<bksp>``), the ordinary causal path (padding mask,
no position ids, loss on the answer tokens): forward, backward and an AdamW step.

Both use the same model architecture and the arithmetic task (SequenceMatch §6.1).
"""

from __future__ import annotations

import itertools

import torch

from seqlevel.bench.speed import SpeedCase


def _setup(quick: bool):
    import datasets

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
    # Algorithm 1 reaches the SequenceMatch phase after BC warm-up; a short one makes the rollouts end with <eos>
    # as in training (an untrained model rambles to max_new_actions, which would overstate the cost)
    trainer.train()
    mle_tok = arithmetic_tokenizer()
    mle_model = tiny_model(cfg.preset, tokenizer=mle_tok, seed=0, **overrides)
    return trainer, mle_model, to_dataset_dict(train, mle_tok), cfg


def sm_step_vs_mle(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """One SequenceMatch optimizer step, rollouts amortised (A), vs one MLE step on the same batch (B)."""
    if device != "cpu":
        raise ValueError("sm-step-vs-mle runs the CPU benchmark configuration; use --device cpu")
    from seqlevel.losses import mle_loss

    torch.set_num_threads(1)  # as the arithmetic bench: one thread avoids OpenMP spin-waits on a shared machine
    trainer, mle_model, data, cfg = _setup(quick)
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

    def mle_cycle():  # the same batches, MLE (run after sm_cycle in each pair or before it: see below)
        for k in range(k_sample):
            mle_step(k)

    first = [True]

    def mle_cycle_safe():
        if first[0] or len(order) < k_sample:  # B ran first in this pair: use the previous cycle's batches
            first[0] = False
            if len(order) < k_sample:
                order[:] = [next(batches)["sm_index"] for _ in range(k_sample)]
        mle_cycle()

    return SpeedCase(a=sm_cycle, b=mle_cycle_safe, a_name=f"{k_sample} SequenceMatch steps incl. 1 refresh",
                     b_name=f"{k_sample} MLE steps, same batches", description=(
                         f"arithmetic, {cfg.preset} {dict(cfg.model_overrides)}, batch {cfg.batch_size} data + "
                         f"{cfg.replay_batch_size} replay rows, {cfg.rollouts_per_refresh} rollouts every "
                         f"{cfg.sample_every} steps"))
