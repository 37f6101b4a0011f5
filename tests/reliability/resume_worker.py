"""A training run for the kill-and-resume tests: ``python resume_worker.py KIND OUT_DIR [--resume] [--slow-after K]``.

KIND is ``mixce``, ``sequencematch`` or ``attribute``. Every logged loss is appended (flushed, fsynced) to
``OUT_DIR/losses.jsonl`` as ``{"step", "loss"}``; at the end the weights go to ``OUT_DIR/final.pt``.
``--slow-after K`` sleeps 3 s after each optimizer step past K (numerics untouched) so the test can SIGKILL the
process between two checkpoints; ``--hang-in-save K`` blocks inside the save of
checkpoint K (for a kill during saving); ``--resume`` passes ``resume_from_checkpoint=True``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from seqlevel.presets import byte_tokenizer, tiny_model  # noqa: E402

STEPS, SAVE_STEPS = 6, 2
TEXTS = ["abc abc", "hello world", "xyz", "the cat sat", "a b c d e", "zzz yyy", "good", "bad bad",
         "seq level", "mixce", "q w e r", "kill -9"]


class _Record(TrainerCallback):
    def __init__(self, path: str, slow_after: int | None):
        self.path, self.slow_after = path, slow_after

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "loss": logs["loss"]}) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def on_step_end(self, args, state, control, **kw):
        if self.slow_after is not None and state.global_step > self.slow_after:
            time.sleep(3.0)  # a wide window: the test polls, then kills, on a loaded machine


def common(out: str) -> dict:
    # dropout stays on (tiny presets use the families' defaults), so the RNG state must be restored exactly
    return dict(output_dir=out, report_to="none", max_steps=STEPS, save_strategy="steps", save_steps=SAVE_STEPS,
                logging_steps=1, use_cpu=True, seed=0, disable_tqdm=True, learning_rate=3e-3,
                per_device_train_batch_size=2, gradient_accumulation_steps=2, dataloader_num_workers=0)


def build(kind: str, out: str):
    if kind == "mixce":
        from seqlevel.trainers import MixCEConfig, MixCETrainer

        tok = byte_tokenizer()
        cfg = MixCEConfig(**common(out), mixce_eta=0.3)
        return MixCETrainer(model=tiny_model("tiny-gpt2", tokenizer=tok, seed=0), args=cfg,
                            train_dataset=datasets.Dataset.from_dict({"text": TEXTS}), processing_class=tok)
    if kind == "attribute":
        from seqlevel.trainers import AttributeConfig, AttributeTrainer

        tok = byte_tokenizer()
        cfg = AttributeConfig(**common(out), attribute_kind="categorical", num_classes=3, consistency_weight=0.1,
                              consistency_chunk=4)
        ds = datasets.Dataset.from_dict({"text": TEXTS, "attribute": [i % 3 for i in range(len(TEXTS))]})
        return AttributeTrainer(model=tiny_model("tiny-llama", tokenizer=tok, seed=0), args=cfg, train_dataset=ds,
                                processing_class=tok)
    if kind == "sequencematch":
        from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict
        from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer

        tok = arithmetic_tokenizer()
        train, _ = make_splits(16, 1, seed=0, train_entropy=(2, 3), test_entropy=(2, 3))
        ds = datasets.Dataset.from_dict(to_dataset_dict(train, tok))
        # SM starts at step 2 and refreshes the buffer every 2 steps: the kill after checkpoint 2 or 4 falls
        # between refreshes, so the buffer restored from the checkpoint is what the next steps draw from
        cfg = SequenceMatchConfig(**common(out), bc_warmup_steps=2, sample_every=2, rollouts_per_refresh=4,
                                  replay_buffer_size=6, replay_batch_size=2, max_new_actions=8, p_noise=0.3,
                                  noise_type="task", gamma=0.9)
        return SequenceMatchTrainer(model=tiny_model("tiny-gpt2", tokenizer=tok, seed=0), args=cfg,
                                    train_dataset=ds, processing_class=tok, noise_fn=task_noise(tok))
    raise SystemExit(f"unknown kind {kind!r}")


def _hang_in_save(trainer, step: int, out: str) -> None:
    """At checkpoint ``step``, stop inside the save: weights and optimizer written, RNG and trainer state not."""
    save = trainer._save_optimizer_and_scheduler

    def hanging(output_dir):
        save(output_dir)
        if trainer.state.global_step == step:
            open(os.path.join(out, "hanging"), "w").close()
            time.sleep(600)  # the test SIGKILLs the process here

    trainer._save_optimizer_and_scheduler = hanging


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("kind")
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--slow-after", type=int, default=None)
    p.add_argument("--hang-in-save", type=int, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    trainer = build(a.kind, a.out)
    if a.hang_in_save is not None:
        _hang_in_save(trainer, a.hang_in_save, a.out)
    trainer.add_callback(_Record(os.path.join(a.out, "losses.jsonl"), a.slow_after))
    trainer.train(resume_from_checkpoint=True if a.resume else None)
    state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    torch.save(state, os.path.join(a.out, "final.pt"))
    print("done", trainer.state.global_step, file=sys.stderr)


if __name__ == "__main__":
    main()
