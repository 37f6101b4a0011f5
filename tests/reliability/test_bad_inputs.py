"""Bad input at every public entry point gets a fix-it error (what was wrong, what was given, how to fix).

``CASES`` is the single list behind the table in ``docs/reliability.md``: each row there names
``tests/reliability/test_bad_inputs.py::test_bad_input[<id>]``, and :func:`test_reliability_doc_lists_every_case`
keeps the two in step. Each case calls the public function (or ``seqlevel.cli.main``) the way a user would.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import pytest
import torch

from seqlevel.presets import byte_tokenizer, tiny_model

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "reliability.md")


@dataclass
class Case:
    id: str
    area: str
    bad: str  # the bad input, in words
    call: Callable[[object], object]  # gets the pytest tmp_path
    match: str  # regex the message must match
    exc: type = ValueError


def _logits(B=2, T=4, V=8):
    return torch.randn(B, T, V)


def _labels(B=2, T=4, V=8):
    return torch.randint(0, V, (B, T))


def _tok_model():
    tok = byte_tokenizer()
    return tok, tiny_model("tiny-gpt2", tokenizer=tok, seed=0).eval()


def _cli_error(argv):
    """Run the CLI in-process; return its one-line error (exit status 2 asserted)."""
    import contextlib
    import io

    from seqlevel.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own errors exit 2 too
            code = e.code
    assert code == 2, f"exit status {code}, expected 2; stderr: {err.getvalue()}"
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    first = next(i for i, ln in enumerate(lines) if "error:" in ln)  # log lines may come before the error
    assert len(lines) - first <= 3, f"the error should be a short message, got: {lines[first:]}"
    raise ValueError(" ".join(lines[first:]))  # re-raised so every case is checked the same way


def _sm_batch():
    from seqlevel.backspace import collate, encode

    enc = [encode([1], [5, 6, 2], 9, eos_id=2, is_data=True, vocab_size=10),
           encode([1], [5, 2], 9, eos_id=2, is_data=False, vocab_size=10)]
    return collate(enc, 0)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _mixce_cfg(tmp_path, **kw):
    from seqlevel.trainers import MixCEConfig

    return MixCEConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, **kw)


def _sm_cfg(tmp_path, **kw):
    from seqlevel.trainers import SequenceMatchConfig

    return SequenceMatchConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, **kw)


def _cat_cfg(tmp_path, **kw):
    from seqlevel.trainers import AttributeConfig

    return AttributeConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, **kw)


def _mixce_trainer(tmp_path, ds, tok=True):
    from seqlevel.trainers import MixCETrainer

    t, m = _tok_model()
    return MixCETrainer(model=m, args=_mixce_cfg(tmp_path), train_dataset=ds, processing_class=t if tok else None)


def _resume_missing(tmp_path):
    from seqlevel.trainers import MixCETrainer

    t, m = _tok_model()
    tr = MixCETrainer(model=m, args=_mixce_cfg(tmp_path, max_steps=1),
                      train_dataset=datasets.Dataset.from_dict({"text": ["abc"]}), processing_class=t)
    (tmp_path / "o" / "checkpoint-3").mkdir(parents=True)
    tr.train(resume_from_checkpoint=str(tmp_path / "o" / "checkpoint-3"))


def _resume_other_seed(tmp_path):
    from seqlevel.trainers import MixCETrainer
    from seqlevel.trainers.checkpointing import write_manifest

    t, m = _tok_model()
    ds = datasets.Dataset.from_dict({"text": ["abc"]})
    ckpt = tmp_path / "o" / "checkpoint-1"
    ckpt.mkdir(parents=True)
    write_manifest(str(ckpt), resume_contract={"seed": 1})
    MixCETrainer(model=m, args=_mixce_cfg(tmp_path, seed=2), train_dataset=ds, processing_class=t).train(
        resume_from_checkpoint=True)


def _generate(**kw):
    from seqlevel.decoding import generate

    tok, m = _tok_model()
    args = dict(max_new_actions=3, eos_token_id=tok.eos_token_id)
    args.update(kw)
    ids = args.pop("input_ids", torch.tensor([[tok.bos_token_id, 65]]))
    return generate(m, ids, **args)


def _load_replay(tmp_path):
    from seqlevel.trainers import ReplayBuffer

    ReplayBuffer(4).save(str(tmp_path))
    ReplayBuffer(8).load(str(tmp_path))


def _evaluate_missing_model(tmp_path):
    return _cli_error(["evaluate", "--model", str(tmp_path / "nope"), "--data", _write(tmp_path, "d.txt", "a b\n"),
                       "--output-dir", str(tmp_path / "e")])


CASES = [
    # ---- losses ------------------------------------------------------------------------------------------------
    Case("mixce-eta-out-of-range", "losses", "mixce_loss(eta=1.5)",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).mixce_loss(_logits(), _labels(), 1.5),
         r"eta must be in \[0, 1\], got 1.5"),
    Case("mixce-unshifted-labels", "losses", "labels one longer than logits (not shifted)",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).mixce_loss(_logits(T=4), _labels(T=5), 0.5),
         r"does not match logits shape"),
    Case("mle-float-labels", "losses", "float labels",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).mle_loss(_logits(), _labels().float()),
         r"labels must be integer token ids"),
    Case("tailr-gamma-negative", "losses", "tailr_loss(gamma=-0.1)",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).tailr_loss(_logits(), _labels(), -0.1),
         r"gamma must be in"),
    Case("tailr-w-min-above-one", "losses", "tailr_loss(w_min=2)",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).tailr_loss(_logits(), _labels(), 0.1, 2.0),
         r"w_min must be in"),
    Case("mle-bad-reduction", "losses", "reduction='avg'",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).mle_loss(_logits(), _labels(), reduction="avg"),
         r"reduction must be"),
    Case("sm-unknown-divergence", "losses", "sequencematch_loss(divergence='chi3')",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).sequencematch_loss(
             torch.randn(2, 4, 10), _sm_batch(), "chi3"), r"unknown divergence 'chi3'"),
    Case("sm-gamma-one", "losses", "sequencematch_loss(gamma=1.0)",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).sequencematch_loss(
             torch.randn(2, 4, 10), _sm_batch(), "chi2_mix", 1.0), r"gamma must be in \(0, 1\)"),
    Case("sm-bad-eos-mode", "losses", "sequencematch_loss(eos='drop')",
         lambda tp: __import__("seqlevel.losses", fromlist=["x"]).sequencematch_loss(
             torch.randn(2, 4, 10), _sm_batch(), "chi2_mix", 0.9, "drop"), r"eos must be"),
    Case("attribute-labels-out-of-range", "losses", "categorical label 5 with K=3",
         lambda tp: __import__("seqlevel.losses.attribute", fromlist=["x"]).check_attribute_labels(
             torch.tensor([0, 5]), "categorical", 3), r"5"),
    Case("attribute-unknown-kind", "losses", "kind='ordinal'",
         lambda tp: __import__("seqlevel.losses.attribute", fromlist=["x"]).check_attribute_labels(
             torch.tensor([0, 1]), "ordinal"), r"kind must be one of .* got 'ordinal'"),
    # ---- encoding ----------------------------------------------------------------------------------------------
    Case("noise-p-above-one", "encoding", "augment_with_noise(p_noise=1.5)",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).augment_with_noise(
             [1, 5, 6, 2], 1.5, rng=0, backspace_id=9, vocab_size=10), r"p_noise"),
    Case("noise-max-run-zero", "encoding", "augment_with_noise(max_run=0)",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).augment_with_noise(
             [1, 5, 6, 2], 0.5, max_run=0, rng=0, backspace_id=9, vocab_size=10), r"max_run"),
    Case("noise-bad-mode", "encoding", "augment_with_noise(mode='both')",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).augment_with_noise(
             [1, 5, 6, 2], 0.5, rng=0, backspace_id=9, vocab_size=10, mode="both"), r"mode"),
    Case("encode-empty-prompt", "encoding", "encode(prompt_ids=[])",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).encode([], [5, 2], 9, eos_id=2),
         r"prompt_ids is empty"),
    Case("encode-id-outside-vocab", "encoding", "action id 50 with vocab_size=10",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).encode([1], [50, 2], 9, eos_id=2,
                                                                             vocab_size=10),
         r"outside the model's vocabulary"),
    Case("encode-longer-than-context", "encoding", "trajectory longer than max_length",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).encode([1], [5, 6, 7, 2], 9, eos_id=2,
                                                                             max_length=3), r"context"),
    Case("encode-targets-length", "encoding", "targets of another length than the actions",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).encode([1], [5, 2], 9, targets=[5], eos_id=2),
         r"targets has length"),
    Case("add-backspace-bad-init", "encoding", "add_backspace_token(init='zeros')",
         lambda tp: __import__("seqlevel.backspace", fromlist=["x"]).add_backspace_token(
             *reversed(_tok_model()), init="zeros"), r"init must be one of .* got 'zeros'"),
    # ---- decoding ----------------------------------------------------------------------------------------------
    Case("generate-top-p-zero", "decoding", "generate(top_p=0)", lambda tp: _generate(top_p=0.0),
         r"top_p must be in \(0, 1\], got 0.0"),
    Case("generate-negative-top-k", "decoding", "generate(top_k=-1)", lambda tp: _generate(top_k=-1), r"top_k"),
    Case("generate-zero-temperature", "decoding", "generate(temperature=0, do_sample=True)",
         lambda tp: _generate(temperature=0.0), r"temperature"),
    Case("generate-zero-actions", "decoding", "generate(max_new_actions=0)", lambda tp: _generate(max_new_actions=0),
         r"max_new_actions"),
    Case("generate-backspace-outside-vocab", "decoding", "backspace_id beyond the vocabulary",
         lambda tp: _generate(backspace_id=10_000), r"backspace"),
    Case("generate-mask-shape", "decoding", "attention_mask of another shape than input_ids",
         lambda tp: _generate(attention_mask=torch.ones(1, 5, dtype=torch.long)), r"attention_mask"),
    # ---- trainers ----------------------------------------------------------------------------------------------
    Case("mixce-config-eta", "trainers", "MixCEConfig(mixce_eta=1.5)", lambda tp: _mixce_cfg(tp, mixce_eta=1.5),
         r"mixce_eta must be in \[0, 1\], got 1.5; eta=1 is plain MLE"),
    Case("mixce-config-objective", "trainers", "MixCEConfig(objective='mixe')",
         lambda tp: _mixce_cfg(tp, objective="mixe"), r"objective must be one of .* got 'mixe'"),
    Case("mixce-config-output-dir-is-file", "trainers", "output_dir pointing at a file",
         lambda tp: __import__("seqlevel.trainers", fromlist=["x"]).MixCEConfig(
             output_dir=_write(tp, "f.txt", "x"), report_to="none", use_cpu=True), r"is a file; pass a directory"),
    Case("trainer-empty-dataset", "trainers", "an empty train_dataset",
         lambda tp: _mixce_trainer(tp, datasets.Dataset.from_dict({"text": []})), r"train_dataset is empty"),
    Case("trainer-wrong-column", "trainers", "a dataset without text/input_ids columns",
         lambda tp: _mixce_trainer(tp, datasets.Dataset.from_dict({"body": ["abc"]})), r"rename a column or set "
         r"dataset_text_field"),
    Case("trainer-text-without-tokenizer", "trainers", "text column but no tokenizer",
         lambda tp: _mixce_trainer(tp, datasets.Dataset.from_dict({"text": ["abc"]}), tok=False),
         r"append_eos=True needs a tokenizer|no tokenizer was given"),
    Case("trainer-wrong-config-type", "trainers", "MixCETrainer(args=TrainingArguments(...))",
         lambda tp: __import__("seqlevel.trainers", fromlist=["x"]).MixCETrainer(
             _tok_model()[1], args=__import__("transformers").TrainingArguments(output_dir=str(tp), use_cpu=True)),
         r"args must be a MixCEConfig"),
    Case("sm-config-gamma", "trainers", "SequenceMatchConfig(gamma=1.0)", lambda tp: _sm_cfg(tp, gamma=1.0),
         r"gamma must be in \(0, 1\), got 1.0; the paper used 0.998"),
    Case("sm-config-noise-without-backspace", "trainers", "p_noise > 0 with use_backspace=False",
         lambda tp: _sm_cfg(tp, p_noise=0.2, use_backspace=False), r"needs use_backspace=True"),
    Case("sm-config-small-buffer", "trainers", "replay_buffer_size < replay_batch_size",
         lambda tp: _sm_cfg(tp, replay_buffer_size=2, replay_batch_size=4), r"smaller than one batch"),
    Case("cat-config-negative-lambda", "trainers", "AttributeConfig(attribute_lambda=-1)",
         lambda tp: _cat_cfg(tp, attribute_lambda=-1.0), r"attribute_lambda must be >= 0, got -1.0"),
    Case("cat-config-regime", "trainers", "AttributeConfig(regime='frozen')",
         lambda tp: _cat_cfg(tp, regime="frozen"), r"regime must be one of .* got 'frozen'"),
    Case("config-nonfinite-policy", "trainers", "nonfinite_policy='ignore'",
         lambda tp: _mixce_cfg(tp, nonfinite_policy="ignore"), r"nonfinite_policy must be one of"),
    Case("resume-incomplete-checkpoint", "trainers", "resume_from_checkpoint= a checkpoint without manifest",
         _resume_missing, r"checkpoint-3' is incomplete: seqlevel_checkpoint.json is missing"),
    Case("resume-other-seed", "trainers", "resuming with another seed than the checkpoint's", _resume_other_seed,
         r"saved with seed=1 \(this run: 2\); a resume is exact only with the same values"),
    Case("replay-capacity-mismatch", "trainers", "resuming a replay buffer with another capacity",
         _load_replay, r"resume with the same replay_buffer_size"),
    Case("load-dataset-missing-file", "trainers", "load_text_dataset of a missing path",
         lambda tp: __import__("seqlevel.data", fromlist=["x"]).load_text_dataset(str(tp / "no.txt")),
         r"not found", FileNotFoundError),
    Case("load-dataset-bad-suffix", "trainers", "a .xlsx dataset file",
         lambda tp: __import__("seqlevel.data", fromlist=["x"]).load_text_dataset(
             _write(tp, "d.xlsx", "a,b\n")), r"unsupported dataset file"),
    # ---- tasks -------------------------------------------------------------------------------------------------
    Case("arithmetic-bad-base", "tasks", "to_base(5, base=1)",
         lambda tp: __import__("seqlevel.tasks.arithmetic", fromlist=["x"]).to_base(5, 1),
         r"base must be in \[2, 36\], got 1"),
    Case("arithmetic-unknown-entropy", "tasks", "make_splits(train_entropy='extreme')",
         lambda tp: __import__("seqlevel.tasks.arithmetic", fromlist=["x"]).make_splits(4, 1, train_entropy="extreme"),
         r"unknown entropy level 'extreme'"),
    Case("arithmetic-bad-bases", "tasks", "make_splits(bases=(2, 40))",
         lambda tp: __import__("seqlevel.tasks.arithmetic", fromlist=["x"]).make_splits(4, 1, bases=(2, 40)),
         r"bases must satisfy 2 <= lo <= hi <= 16"),
    Case("markov-vocab-too-small", "tasks", "make_p(vocab_size=2)",
         lambda tp: __import__("seqlevel.tasks.markov", fromlist=["x"]).make_p(2, 0), r"vocab_size must be an integer >= 3"),
    Case("markov-bad-init", "tasks", "make_p(init='uniform')",
         lambda tp: __import__("seqlevel.tasks.markov", fromlist=["x"]).make_p(8, 0, init="uniform"),
         r"init must be one of"),
    # ---- metrics -----------------------------------------------------------------------------------------------
    Case("rep-n-zero", "metrics", "rep_n(n=0)",
         lambda tp: __import__("seqlevel.metrics", fromlist=["x"]).rep_n(["a b"], 0), r"n must be >= 1, got 0"),
    Case("diversity-single-string", "metrics", "a single string instead of a list",
         lambda tp: __import__("seqlevel.metrics", fromlist=["x"]).distinct_ngram_diversity("a b c"),
         r"not a single string"),
    Case("perplexity-no-sequences", "metrics", "perplexity of no sequences",
         lambda tp: __import__("seqlevel.metrics", fromlist=["x"]).perplexity(_tok_model()[1], []),
         r"no sequences given"),
    Case("coherence-length-mismatch", "metrics", "2 prompts, 1 continuation",
         lambda tp: __import__("seqlevel.metrics", fromlist=["x"]).coherence(["a", "b"], ["c"], None, None),
         r"2 prompts but 1 continuations"),
    Case("mauve-feature-width", "metrics", "p and q features of different widths",
         lambda tp: __import__("seqlevel.metrics", fromlist=["x"]).mauve(
             p_features=np.zeros((4, 3)), q_features=np.zeros((4, 5))), r"differ in width|mauve-text"),
    Case("true-nll-no-samples", "metrics", "true_nll([])",
         lambda tp: __import__("seqlevel.metrics", fromlist=["x"]).true_nll([], lambda s: 0.0), r"no samples given"),
    # ---- CLI ---------------------------------------------------------------------------------------------------
    Case("cli-train-missing-dataset", "cli", "seqlevel train --dataset missing.txt",
         lambda tp: _cli_error(["train", "--model", "tiny-gpt2", "--dataset", str(tp / "missing.txt"),
                                "--output-dir", str(tp / "o")]), r"seqlevel train: error: dataset .* not found"),
    Case("cli-train-bad-eta", "cli", "seqlevel train --mixce-eta 2",
         lambda tp: _cli_error(["train", "--model", "tiny-gpt2", "--dataset", _write(tp, "d.txt", "abc\n"),
                                "--output-dir", str(tp / "o"), "--mixce-eta", "2"]),
         r"seqlevel train: error: mixce_eta must be in \[0, 1\], got 2.0"),
    Case("cli-train-unknown-preset", "cli", "seqlevel train --model tiny-gpt3",
         lambda tp: _cli_error(["train", "--model", "tiny-gpt3", "--dataset", _write(tp, "d.txt", "abc\n"),
                                "--output-dir", str(tp / "o")]), r"a preset \(small-gpt2, small-llama, tiny-gpt2, tiny-llama\)"),
    Case("cli-train-missing-required", "cli", "seqlevel train without --dataset",
         lambda tp: _cli_error(["train", "--model", "tiny-gpt2", "--output-dir", str(tp / "o")]),
         r"the following arguments are required: --dataset"),
    Case("cli-unknown-command", "cli", "seqlevel fly",
         lambda tp: _cli_error(["fly"]), r"invalid choice: 'fly'"),
    Case("cli-evaluate-missing-model", "cli", "seqlevel evaluate --model <missing path>",
         _evaluate_missing_model, r"seqlevel evaluate: error: .*nope"),
    Case("cli-train-resume-nothing", "cli", "seqlevel train --resume with no checkpoint",
         lambda tp: _cli_error(["train", "--model", "tiny-gpt2", "--dataset", _write(tp, "d.txt", "abc\n"),
                                "--output-dir", str(tp / "o"), "--max-steps", "1", "--resume"]),
         r"seqlevel train: error: .*checkpoint"),
    # ---- the command layer (issue 15): every category of bad input gets a named, fix-it error ------------------
    *[Case(f"cli-train-{cid}", "cli", " ".join(x for x in ("seqlevel train", flag, val) if x),
           (lambda flag, val: lambda tp: _cli_error(_train_argv(tp, flag, val)))(flag, val), match)
      for cid, flag, val, match in [
          ("epochs-zero", "--epochs=0", "--max-steps=-1", r"num_train_epochs \(--epochs\) must be > 0"),
          ("grad-accum-zero", "--grad-accum", "0", r"gradient_accumulation_steps \(--grad-accum\) must be >= 1"),
          ("max-steps-zero", "--max-steps", "0", r"max_steps \(--max-steps\) must be >= 1, or -1"),
          ("batch-size-zero", "--batch-size", "0", r"per_device_train_batch_size \(--batch-size\) must be >= 1"),
          ("negative-lr", "--lr=-1", None, r"learning_rate \(--lr\) must be a finite number >= 0"),
          ("save-steps-zero", "--save-steps", "0", r"save_steps \(--save-steps\) must be > 0"),
          ("max-length-beyond-context", "--max-length", "1000",
           r"--max-length 1000 exceeds the model's context of 256 positions"),
          ("foreign-option", "--p-noise", "0.2", r"--p-noise is an option of --objective sequencematch"),
          ("eval-strategy-without-eval-data", "--eval_strategy", "steps", r"needs evaluation data; pass --eval-dataset"),
          ("resume-and-overwrite", "--resume", "--overwrite-output-dir", r"pass one"),
          ("unknown-objective", "--objective", "ppo", r"unknown objective 'ppo'; choose one of mle, mixce"),
      ]],
    Case("cli-train-unknown-text-field", "cli", "seqlevel train --dataset-text-field body (no such column)",
         lambda tp: _cli_error(_train_argv(tp, "--dataset-text-field", "body", "--dataset",
                                           _write(tp, "d.jsonl", '{"text": "a b"}\n'))),
         r"needs 'body' \(text\).*--dataset-text-field"),
    Case("trainer-tokenizer-larger-than-model", "trainers", "MixCETrainer with a 259-token tokenizer, 64-row model",
         lambda tp: _mixce(tp, tiny_model("tiny-gpt2", vocab_size=64), byte_tokenizer(), {"text": ["ab"]}),
         r"the tokenizer has 259 tokens but the model has only 64 embedding rows"),
    Case("trainer-ids-outside-vocab", "trainers", "MixCETrainer on input_ids made with another tokenizer",
         lambda tp: _mixce(tp, tiny_model("tiny-gpt2", vocab_size=64), None, {"input_ids": [[1, 2, 99]]},
                           append_eos=False),
         r"holds token id 99, outside the model's vocabulary \[0, 64\)"),
    Case("trainer-model-path-missing", "trainers", "MixCETrainer(model='<missing dir>')",
         lambda tp: _mixce(tp, str(tp / "no-model"), None, {"text": ["ab"]}),
         r"model path '.*no-model' does not exist"),
    Case("data-path-not-a-string", "trainers", "load_text_dataset(123)",
         lambda tp: __import__("seqlevel.data", fromlist=["x"]).load_text_dataset(123),
         r"dataset must be a path or a Hub dataset name \(str\), got int"),
    Case("data-list-instead-of-dataset", "trainers", "MixCETrainer(train_dataset=['a', 'b'])",
         lambda tp: __import__("seqlevel.data", fromlist=["x"]).tokenize_dataset(["a", "b"], byte_tokenizer()),
         r"the dataset must be a datasets.Dataset, got list"),
    Case("loader-model-none", "trainers", "load_model_and_tokenizer(None)",
         lambda tp: __import__("seqlevel.data", fromlist=["x"]).load_model_and_tokenizer(None),
         r"model must be a preset .* got None"),
    Case("cli-train-nonempty-output-dir", "cli", "seqlevel train into a directory holding a previous model",
         lambda tp: (tp.joinpath("o").mkdir(), tp.joinpath("o", "model.safetensors").write_text("x"),
                     _cli_error(_train_argv(tp))),
         r"--output-dir '.*o' is not empty \(it holds model.safetensors\); pass --resume .* --overwrite-output-dir"),
    Case("cli-train-output-dir-read-only", "cli", "seqlevel train --output-dir on a read-only file system",
         lambda tp: _cli_error(_train_argv(tp, "--output-dir", "/proc/seqlevel-out")),
         r"cannot write to --output-dir '/proc/seqlevel-out'.*not writable"),
    Case("cli-train-non-utf8-dataset", "cli", "seqlevel train --dataset latin-1.txt",
         lambda tp: (tp.joinpath("l1.txt").write_bytes("caf\u00e9\n".encode("latin-1")),
                     _cli_error(_train_argv(tp, "--dataset", str(tp / "l1.txt")))),
         r"dataset '.*l1.txt' is not UTF-8 text: byte 0xe9 at line 1.*re-encode"),
    Case("cli-train-binary-dataset", "cli", "seqlevel train --dataset model.bin.txt (binary)",
         lambda tp: (tp.joinpath("b.txt").write_bytes(bytes(range(256))),
                     _cli_error(_train_argv(tp, "--dataset", str(tp / "b.txt")))),
         r"'.*b.txt' looks like a binary file"),
    Case("cli-train-malformed-jsonl", "cli", "seqlevel train --dataset with a broken JSONL line",
         lambda tp: _cli_error(_train_argv(tp, "--dataset", _write(tp, "d.jsonl", '{"text": "a"}\n{"text": \n'))),
         r"'.*d.jsonl' line 2 is not valid JSON"),
    Case("cli-train-chat-without-template", "cli", "seqlevel train on 'messages' with a template-less tokenizer",
         lambda tp: _cli_error(_train_argv(tp, "--dataset", _write(
             tp, "c.jsonl", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'))),
         r"has no chat template"),
    Case("cli-train-hub-dataset-offline", "cli", "seqlevel train --dataset someone/data (offline)",
         lambda tp: _cli_error(_train_argv(tp, "--dataset", "someone/no-such-data")),
         r"as a Hub dataset name it needs a connection"),
    Case("cli-train-hub-model-offline", "cli", "seqlevel train --model someone/model (offline)",
         lambda tp: _cli_error(_train_argv(tp, "--model", "someone/no-such-model")),
         r"could not load model 'someone/no-such-model'.*needs a connection"),
    Case("cli-train-vocab-mismatch", "cli", "seqlevel train --tokenizer with more tokens than the model",
         lambda tp: (_small_model(tp), _cli_error(_train_argv(tp, "--model", str(tp / "m"), "--tokenizer",
                                                               str(tp / "bigtok")))),
         r"has 259 tokens but model '.*m' has only 64 embedding rows"),
    Case("cli-train-cat-without-attribute", "cli", "seqlevel train --objective cat on text only",
         lambda tp: _cli_error(_train_argv(tp, "--objective", "cat")),
         r"no attribute column 'attribute'; add one label per example or pass --attribute-field"),
    Case("cli-train-cat-text-labels", "cli", "seqlevel train --objective cat with labels 'good'/'bad'",
         lambda tp: _cli_error(_train_argv(tp, "--objective", "cat", "--dataset",
                                           _write(tp, "c.csv", "text,attribute\nnice,good\nbad,bad\n"))),
         r"attribute column 'attribute' of '.*c.csv' holds 'good'; labels must be numbers"),
    Case("cli-train-sm-never-leaves-warmup", "cli", "seqlevel train --objective sequencematch --max-steps 2",
         lambda tp: _cli_error(_train_argv(tp, "--objective", "sequencematch", "--max-steps", "2")),
         r"2 optimizer steps but bc_warmup_steps=100.*never leave the behaviour-cloning warm-up"),
    Case("cli-train-config-unknown-key", "cli", "seqlevel train --config with a misspelt option",
         lambda tp: _cli_error(_train_argv(tp, "--config", _write(tp, "r.yaml", "learning_rat: 0.1\n"))),
         r"--config '.*r.yaml': unknown option 'learning_rat'"),
    Case("cli-train-config-bad-yaml", "cli", "seqlevel train --config with broken YAML",
         lambda tp: _cli_error(_train_argv(tp, "--config", _write(tp, "r.yaml", "a: [1, 2\n"))),
         r"--config '.*r.yaml' is not valid YAML"),
    Case("cli-train-config-bad-value", "cli", "seqlevel train --config with learning_rate: abc",
         lambda tp: _cli_error(_train_argv(tp, "--config", _write(tp, "r.yaml", "learning_rate: abc\n"))),
         r"--config '.*r.yaml': option 'learning_rate' has value 'abc', which is not a valid float"),
    Case("cli-train-negative-seed", "cli", "seqlevel train --seed=-1",
         lambda tp: _cli_error(_train_argv(tp, "--seed=-1")), r"seed must be in \[0, 2\*\*32\), got -1"),
    Case("cli-train-null-text", "cli", "seqlevel train on JSONL whose text is null",
         lambda tp: _cli_error(_train_argv(tp, "--dataset", _write(tp, "n.jsonl", '{"text": null}\n{"text": "a"}\n'))),
         r"column 'text' holds a NoneType, not text; pass --dataset-text-field"),
    Case("cli-generate-bad-device", "cli", "seqlevel generate --device tpu",
         lambda tp: _cli_error(["generate", "--model", "tiny-gpt2", "--prompts", _write(tp, "p.txt", "a\n"),
                                "--device", "tpu"]), r"--device 'tpu' is not a torch device"),
    Case("cli-generate-missing-prompts", "cli", "seqlevel generate --prompts missing.txt",
         lambda tp: _cli_error(["generate", "--model", "tiny-gpt2", "--prompts", str(tp / "missing.txt")]),
         r"prompts file '.*missing.txt' not found"),
    Case("cli-evaluate-prompt-beyond-context", "cli", "seqlevel evaluate --prompt-tokens 300 (context 256)",
         lambda tp: _cli_error(["evaluate", "--model", "tiny-gpt2", "--data", _write(tp, "d.txt", "x" * 400 + "\n"),
                                "--no-mauve", "--prompt-tokens", "300", "--output-dir", str(tp / "ev")]),
         r"--prompt-tokens 300 leaves no room to generate in the model's context of 256 tokens"),
    Case("cli-generate-empty-model-dir", "cli", "seqlevel generate --model <empty directory>",
         lambda tp: (tp.joinpath("e").mkdir(), _cli_error(["generate", "--model", str(tp / "e"), "--prompts",
                                                           _write(tp, "p.txt", "a\n")])),
         r"has no config.json, so it is not a saved model"),
    Case("cli-explain-not-a-cat-model", "cli", "seqlevel explain --model <a plain LM directory>",
         lambda tp: (_small_model(tp), _cli_error(["explain", "--model", str(tp / "m"), "--text", "ab"])),
         r"holds no attribute head.*seqlevel train --objective cat"),
    Case("cli-explain-missing-model", "cli", "seqlevel explain --model <missing path>",
         lambda tp: _cli_error(["explain", "--model", str(tp / "nope"), "--text", "ab"]),
         r"model path '.*nope' does not exist"),
    Case("cli-evaluate-non-utf8-data", "cli", "seqlevel evaluate --data latin-1.txt",
         lambda tp: (tp.joinpath("l1.txt").write_bytes("caf\u00e9\n".encode("latin-1")),
                     _cli_error(["evaluate", "--model", "tiny-gpt2", "--data", str(tp / "l1.txt"), "--no-mauve",
                                 "--output-dir", str(tp / "ev")])),
         r"is not UTF-8 text"),
]


def _train_argv(tp, *extra):
    """``seqlevel train`` on a small text file into ``tp/o``, with ``extra`` flags (a later flag wins)."""
    argv = ["train", "--model", "tiny-gpt2", "--dataset", _write(tp, "d.txt", "hello world\nabc def\n"),
            "--output-dir", str(tp / "o"), "--max-steps", "1"]
    return argv + [x for x in extra if x is not None]


def _mixce(tp, model, tok, columns, **cfg):
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    args = MixCEConfig(output_dir=str(tp / "o"), max_steps=1, report_to="none", save_strategy="no", **cfg)
    return MixCETrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict(columns),
                        processing_class=tok)


def _small_model(tp):
    """A saved 64-token model with the byte tokenizer (259 tokens) saved apart in ``tp/bigtok``."""
    tiny_model("tiny-gpt2", vocab_size=64).save_pretrained(tp / "m")
    byte_tokenizer().save_pretrained(tp / "bigtok")
    byte_tokenizer().save_pretrained(tp / "m")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, tmp_path):
    random.seed(0)
    torch.manual_seed(0)
    with pytest.raises(case.exc) as info:
        case.call(tmp_path)
    msg = str(info.value)
    assert re.search(case.match, msg), f"message {msg!r} does not match {case.match!r}"


def test_cases_are_distinct_and_enough():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 40
    assert {c.area for c in CASES} >= {"losses", "encoding", "decoding", "trainers", "tasks", "metrics", "cli"}


def test_reliability_doc_lists_every_case():
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    listed = set(re.findall(r"test_bad_inputs\.py::test_bad_input\[([^\]]+)\]", doc))
    assert listed == {c.id for c in CASES}, (f"missing from the doc: {sorted({c.id for c in CASES} - listed)}; "
                                             f"not a case: {sorted(listed - {c.id for c in CASES})}")
