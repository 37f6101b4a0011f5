"""Building a trainer from plain options: what ``seqlevel train`` calls. No training logic lives here."""

from __future__ import annotations

import argparse
import os

from seqlevel.presets import MODEL_PRESETS, byte_tokenizer, tiny_model
from seqlevel.trainers.data import load_text_dataset


def load_model_and_tokenizer(model: str, tokenizer: str | None = None, seed: int = 0):
    """A preset (``tiny-gpt2`` ...) with a byte-level tokenizer, or ``from_pretrained`` on a name/path.

    Raises:
        ValueError: the model cannot be loaded (says what was looked for and how to fix it).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model in MODEL_PRESETS:
        tok = AutoTokenizer.from_pretrained(tokenizer) if tokenizer else byte_tokenizer()
        return tiny_model(model, tokenizer=tok, seed=seed), tok
    looks_local = model.startswith((".", "/", "~")) or os.sep in model.strip(os.sep).split(os.sep, 2)[-1]
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise ValueError(f"model path {model!r} does not exist: looked for a directory with config.json and weights "
                         f"(as written by save_pretrained / seqlevel train), or a preset ({', '.join(sorted(MODEL_PRESETS))})")
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer or model)
        net = AutoModelForCausalLM.from_pretrained(model)
    except OSError as err:
        where = "a local directory" if os.path.isdir(model) else "neither a local directory nor a cached Hub model"
        raise ValueError(f"could not load model {model!r} ({where}): {err}. Pass a directory written by "
                         f"save_pretrained, a preset ({', '.join(sorted(MODEL_PRESETS))}), or a Hub name "
                         "on a machine with internet access") from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token  # GPT-2 has no pad token; pads are masked out of the loss anyway
    return net, tok


def train_from_cli(args: argparse.Namespace) -> int:
    """Run ``seqlevel train`` for the MixCE-family objectives; returns the process exit code."""
    from seqlevel.trainers.mixce import OBJECTIVES, MixCEConfig, MixCETrainer

    if args.objective == "sequencematch":
        return _train_sequencematch(args)
    if args.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {args.objective!r}; choose one of "
                         f"{', '.join((*OBJECTIVES, 'sequencematch'))}")
    if os.path.isfile(args.output_dir):
        raise ValueError(f"--output-dir {args.output_dir!r} is a file; pass a directory path")
    extra = {k: v for k, v in dict(mixce_eta=args.mixce_eta, tailr_gamma=args.tailr_gamma,
                                    tailr_w_min=args.tailr_w_min, max_length=args.max_length).items()
             if v is not None}
    config = MixCEConfig(
        output_dir=args.output_dir, objective=args.objective, num_train_epochs=args.epochs,
        max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, seed=args.seed,
        save_steps=args.save_steps, logging_steps=10, report_to="none", **extra,
    )
    dataset = load_text_dataset(args.dataset)  # validated before anything is written
    model, tok = load_model_and_tokenizer(args.model, args.tokenizer, seed=args.seed)
    trainer = MixCETrainer(model=model, args=config, train_dataset=dataset, processing_class=tok)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    trainer.save_model(args.output_dir)
    print(f"saved model and tokenizer to {args.output_dir}")
    return 0


SM_FLAGS = ("p_noise", "noise_type", "bc_warmup_steps", "sm_weight", "gamma", "divergence", "sample_every",
            "rollouts_per_refresh", "replay_buffer_size", "max_new_actions", "max_length")


def _train_sequencematch(args: argparse.Namespace) -> int:
    """``seqlevel train --objective sequencematch``: SequenceMatchTrainer on a local dataset or ``arithmetic``."""
    from seqlevel.trainers.sequencematch import SequenceMatchConfig, SequenceMatchTrainer

    if os.path.isfile(args.output_dir):
        raise ValueError(f"--output-dir {args.output_dir!r} is a file; pass a directory path")
    extra = {k: getattr(args, k) for k in SM_FLAGS if getattr(args, k, None) is not None}
    noise_fn = None
    if args.dataset == "arithmetic":  # the SequenceMatch §6.1 task, built locally (5,000 questions)
        if args.model not in MODEL_PRESETS or args.tokenizer:
            raise ValueError("--dataset arithmetic trains a preset model from scratch on its character tokenizer; "
                             f"pass --model one of {', '.join(sorted(MODEL_PRESETS))} and no --tokenizer")
        import datasets

        from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict

        tok = arithmetic_tokenizer()
        train, _ = make_splits(5000, 0, seed=args.seed)
        dataset = datasets.Dataset.from_dict(to_dataset_dict(train, tok))
        noise_fn = task_noise(tok)
        extra.setdefault("noise_type", "task")
    else:
        if extra.get("noise_type") == "task":
            raise ValueError("--noise-type task needs a task that provides noise; use --dataset arithmetic or "
                             "--noise-type random")
        dataset = load_text_dataset(args.dataset)
        tok = None
    config = SequenceMatchConfig(
        output_dir=args.output_dir, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr, seed=args.seed, save_steps=args.save_steps, logging_steps=10, report_to="none",
        **extra,
    )
    if tok is not None and args.model in MODEL_PRESETS:
        model = tiny_model(args.model, tokenizer=tok, seed=args.seed)
    else:
        model, tok = load_model_and_tokenizer(args.model, args.tokenizer, seed=args.seed)
    trainer = SequenceMatchTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok,
                                   noise_fn=noise_fn)
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    trainer.save_model(args.output_dir)
    print(f"saved model and tokenizer (with <bksp>) to {args.output_dir}")
    return 0
