"""``MixCEConfig`` / ``MixCETrainer``: token-weighted objectives (MLE, MixCE, TaiLr, DFT) on any causal LM.

A TRL-style pair: the config is a ``transformers.TrainingArguments`` subclass whose extra fields are
validated in ``__post_init__``; the trainer is a ``transformers.Trainer`` subclass that overrides only
``compute_loss``. Everything else (gradient accumulation, mixed precision, checkpoint/resume, DDP/FSDP/DeepSpeed
through ``accelerate launch``) is the Trainer's own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from seqlevel.backspace.vocab import BACKSPACE_TOKEN
from seqlevel.data import CausalLMCollator, context_length, load_model_and_tokenizer, tokenize_dataset
from seqlevel.losses import dft_loss, mixce_loss, mle_loss, tailr_loss
from seqlevel.trainers.checkpointing import SafeCheckpointMixin
from seqlevel.trainers.distributed import check_distributed_setup
from seqlevel.trainers.guards import NumericalGuardMixin, ReliabilityArgs

OBJECTIVES = ("mle", "mixce", "tailr", "dft")
logger = logging.getLogger(__name__)


def _embedding_rows(model) -> int | None:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return int(emb.weight.shape[0]) if emb is not None and hasattr(emb, "weight") else None


def _check_ids(dataset, rows: int | None):
    """Refuse token ids outside the embedding (an ``input_ids`` dataset made with another tokenizer)."""
    if rows is not None:
        top = max((max(ids) for ids in dataset["input_ids"] if ids), default=-1)
        low = min((min(ids) for ids in dataset["input_ids"] if ids), default=0)
        if top >= rows or low < 0:
            raise ValueError(f"the dataset holds token id {top if top >= rows else low}, outside the model's "
                             f"vocabulary [0, {rows}); tokenize with the model's own tokenizer")
    return dataset


@dataclass
class MixCEConfig(ReliabilityArgs, TrainingArguments):
    """Training arguments for :class:`MixCETrainer`; every ``TrainingArguments`` field works as usual.

    Args:
        objective: ``"mle"``, ``"mixce"`` (default), ``"tailr"`` or ``"dft"``.
        mixce_eta: MixCE mixing ratio η ∈ [0, 1]; 1 is MLE, 0 is DFT. The paper selected η on dev MAUVE
            (0.1 WikiText, 0.3 WebText, 0.7 WritingPrompts); 0.5 is a middle default. Small η trained for long
            over-sharpens the model (its fixed point is a sharpened empirical distribution).
        tailr_gamma: TaiLr density-ratio threshold γ ∈ [0, 1]; 0 is MLE. The TaiLr long-text setting is 1e-7.
        tailr_w_min: TaiLr weight floor ∈ [0, 1] (0.2 in the TaiLr long-text setting).
        tailr_label_smoothing: TaiLr label smoothing ε ∈ [0, 1).
        max_length: examples are truncated to ``max_length - 1`` tokens before ``<eos>`` is appended.
        dataset_text_field: the text column used when the dataset has no ``input_ids``.
        append_eos: append the tokenizer's ``<eos>`` to every example (it is trained, as in the MixCE code).
        model_init_kwargs: kwargs for ``AutoModelForCausalLM.from_pretrained`` when ``model`` is a string.
        nonfinite_policy / nonfinite_check_grads / magnitude_limit / checkpoint_checksums: see
            :class:`seqlevel.trainers.guards.ReliabilityArgs`.
    """

    objective: str = field(default="mixce", metadata={"help": "mle | mixce | tailr | dft"})
    mixce_eta: float = field(default=0.5, metadata={"help": "MixCE mixing ratio in [0, 1]; 1 = MLE, 0 = DFT"})
    tailr_gamma: float = field(default=1e-7, metadata={"help": "TaiLr gamma in [0, 1]; 0 = MLE"})
    tailr_w_min: float = field(default=0.2, metadata={"help": "TaiLr weight floor in [0, 1]"})
    tailr_label_smoothing: float = field(default=0.0, metadata={"help": "TaiLr label smoothing in [0, 1)"})
    max_length: int = field(default=512, metadata={"help": "max tokens per example, <eos> included"})
    dataset_text_field: str = field(default="text", metadata={"help": "text column of the dataset"})
    append_eos: bool = field(default=True, metadata={"help": "append <eos> to every example"})
    model_init_kwargs: dict | None = field(default=None, metadata={"help": "kwargs for from_pretrained"})

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}; "
                             "use 'mixce' with mixce_eta=1.0 for plain MLE with the same code path")
        if not (0.0 <= self.mixce_eta <= 1.0):
            raise ValueError(f"mixce_eta must be in [0, 1], got {self.mixce_eta}; eta=1 is plain MLE")
        if not (0.0 <= self.tailr_gamma <= 1.0):
            raise ValueError(f"tailr_gamma must be in [0, 1], got {self.tailr_gamma}; 0 is MLE, the paper used 1e-7")
        if not (0.0 <= self.tailr_w_min <= 1.0):
            raise ValueError(f"tailr_w_min must be in [0, 1], got {self.tailr_w_min}; the paper used 0.2")
        if not (0.0 <= self.tailr_label_smoothing < 1.0):
            raise ValueError(f"tailr_label_smoothing must be in [0, 1), got {self.tailr_label_smoothing}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one token plus <eos>), got {self.max_length}")
        if self.output_dir is not None and os.path.isfile(self.output_dir):
            raise ValueError(f"output_dir {self.output_dir!r} is a file; pass a directory path "
                             "(it is created if missing)")
        super().__post_init__()


class MixCETrainer(SafeCheckpointMixin, NumericalGuardMixin, Trainer):
    """``transformers.Trainer`` with a token-weighted objective chosen by ``args.objective``.

    Args:
        model: a ``PreTrainedModel`` or a model name/path for ``AutoModelForCausalLM.from_pretrained``.
        args: a :class:`MixCEConfig`.
        train_dataset / eval_dataset: ``datasets.Dataset`` with a text column or ``input_ids``.
        processing_class: the tokenizer (loaded from ``model`` when it is a string and this is ``None``).
        peft_config: optional ``peft.PeftConfig``; the model is wrapped with ``peft.get_peft_model``.
        **kwargs: passed to ``transformers.Trainer`` (callbacks, optimizers, ...).
    """

    _name = "MixCE"
    _paper = "MixCE: Training Autoregressive Language Models by Mixing Forward and Reverse Cross-Entropies (ACL 2023)"

    def __init__(self, model, args: MixCEConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, data_collator=None, peft_config=None, **kwargs):
        args = args if args is not None else MixCEConfig(output_dir="mixce_output")
        if not isinstance(args, MixCEConfig):
            raise ValueError(f"args must be a MixCEConfig, got {type(args).__name__}; "
                             "build it with MixCEConfig(output_dir=..., objective=..., mixce_eta=...)")
        if isinstance(model, str):  # the one loader: names the path, says when a Hub name needs a connection
            model, tok = load_model_and_tokenizer(model, model_kwargs=args.model_init_kwargs)
            processing_class = processing_class if processing_class is not None else tok
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
            vocab = processing_class.get_vocab() if processing_class is not None else {}
            if BACKSPACE_TOKEN in vocab:  # a new action must keep trainable rows under an adapter
                from seqlevel.trainers.peft import check_rows_trainable

                check_rows_trainable(model, vocab[BACKSPACE_TOKEN])
        check_distributed_setup(args, model)  # FSDP that wraps nothing, batches that do not split: fail here
        rows = _embedding_rows(model)
        if processing_class is not None and rows is not None and len(processing_class) > rows:
            raise ValueError(f"the tokenizer has {len(processing_class)} tokens but the model has only {rows} "
                             "embedding rows, so ids >= {rows} would crash; pass the model's own tokenizer or call "
                             "model.resize_token_embeddings(len(tokenizer))".replace("{rows}", str(rows)))
        max_length, ctx = args.max_length, context_length(model)
        if ctx is not None and max_length > ctx:  # longer examples would index past the position embeddings
            logger.warning("note: max_length=%d is longer than the model's context of %d positions; examples are "
                           "truncated to %d tokens", max_length, ctx, ctx)
            max_length = ctx
        prep = dict(text_field=args.dataset_text_field, max_length=max_length, append_eos=args.append_eos)
        if train_dataset is not None:  # Trainer.train() itself refuses a missing train_dataset
            train_dataset = _check_ids(tokenize_dataset(train_dataset, processing_class, **prep), rows)
        if eval_dataset is not None:
            eval_dataset = _check_ids(tokenize_dataset(eval_dataset, processing_class, **prep), rows)
        if data_collator is None:
            pad = getattr(processing_class, "pad_token_id", None)
            if pad is None:
                pad = getattr(processing_class, "eos_token_id", None) or 0  # pads are masked out, any id works
            data_collator = CausalLMCollator(pad_token_id=pad)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, data_collator=data_collator, **kwargs)

    def objective_loss(self, logits, labels, num_items_in_batch=None):
        """The configured objective on aligned ``logits (B, T, V)`` / ``labels (B, T)``."""
        a = self.args
        kw = dict(num_items_in_batch=num_items_in_batch)
        if a.objective == "mle":
            return mle_loss(logits, labels, **kw)
        if a.objective == "mixce":
            return mixce_loss(logits, labels, a.mixce_eta, **kw)
        if a.objective == "dft":
            return dft_loss(logits, labels, **kw)
        return tailr_loss(logits, labels, a.tailr_gamma, a.tailr_w_min, a.tailr_label_smoothing, **kw)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Mirrors Trainer.compute_loss: labels are popped so the model computes no loss of its own, and the loss is
        # normalised by num_items_in_batch (tokens in the whole optimizer step) when the Trainer counted them.
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs, use_cache=False)
        logits = outputs.logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
        loss = self.objective_loss(logits, labels[:, 1:], num_items_in_batch=num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # num_items_in_batch was summed over ranks
        nll = None
        if self.args.objective != "mle":  # the plain NLL, logged as 'nll' so runs compare across objectives
            with torch.no_grad():
                nll = mle_loss(logits.detach(), labels[:, 1:], num_items_in_batch=num_items_in_batch)
        loss = self.check_finite(loss, {self.args.objective: loss}, nll=nll)  # see trainers/guards.py
        return (loss, outputs) if return_outputs else loss
