"""``AttributeConfig`` / ``AttributeTrainer``: CAT training (notes §1.3) on any causal LM.

``L = CE + λ · L_attr + μ · L_consistency`` with the losses of :mod:`seqlevel.losses.attribute`. Three regimes:

* joint training from scratch: pass a randomly initialised base (e.g. ``seqlevel.presets.tiny_model``);
* fine-tuning: pass a pretrained base (optionally with ``peft_config``); both are ``regime="joint"``;
* head only (``regime="head_only"``): the base is frozen and run without gradients; the loss is ``L_attr``
  (+ consistency) alone.

The dataset needs ``input_ids`` (or a text column) and one attribute label per sequence (``attribute_field``).

Held-out evaluation works the way ``transformers.Trainer`` users expect: set ``eval_strategy`` (and ``eval_steps``)
and pass ``eval_dataset``; :meth:`AttributeTrainer.evaluate` reports ``eval_lm_loss``, ``eval_attribute_loss`` and
``eval_loss`` (``lm + λ·attribute``, token-weighted over the whole eval set), plus whatever the optional
``decision_metrics(model) -> dict`` callable returns (e.g. agreement of the steered policy with exact values), as
``eval_<name>``. Any of them can be ``metric_for_best_model`` with ``load_best_model_at_end=True`` (the best
checkpoint's base and head are reloaded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments

from seqlevel.attributes.estimate import expected_attribute
from seqlevel.attributes.head import KINDS
from seqlevel.attributes.model import HEAD_WEIGHTS, AttributeModel
from seqlevel.data import CausalLMCollator, tokenize_dataset
from seqlevel.losses.attribute import attribute_loss, check_attribute_labels, consistency_loss
from seqlevel.losses.token_weighted import mle_loss
from seqlevel.trainers.callbacks import attach, credit_example
from seqlevel.trainers.checkpointing import SafeCheckpointMixin
from seqlevel.trainers.distributed import check_distributed_setup
from seqlevel.trainers.guards import NumericalGuardMixin, ReliabilityArgs

REGIMES = ("joint", "head_only")


@dataclass
class AttributeConfig(ReliabilityArgs, TrainingArguments):
    """Training arguments for :class:`AttributeTrainer`; every ``TrainingArguments`` field works as usual.

    Args:
        attribute_kind: ``"binary"``, ``"categorical"`` or ``"numeric"`` (used when a fresh head is built).
        num_classes: K for a categorical head.
        attribute_lambda: λ ≥ 0 in ``CE + λ·L_attr``; 0.15 was the CAT paper's best for Amazon reviews.
        consistency_weight: μ ≥ 0 for the NADO-style one-step consistency term (0 = off, as in CAT).
        consistency_chunk: positions per chunk when the consistency target (all V candidates) is computed;
            bounds its memory at ``chunk·V·K``.
        regime: ``"joint"`` (from scratch or fine-tuning) or ``"head_only"`` (frozen base).
        head_rank: r of the factorised head. head_block_size: width of the attribute block (default d).
        head_query_std: init std of the head's queries (``AttributeHeadConfig.query_std``); used when a fresh head
            is built.
        head_learning_rate: learning rate of the attribute head's parameters (``None``: ``learning_rate``, one
            group); the schedule scales both groups alike.
        head_dueling / head_dueling_candidates: the dueling head (``AttributeHeadConfig.dueling``: state value +
            advantage centred over the candidate token ids, ``None`` = the whole vocabulary); used when a fresh head
            is built.
        context_window: W, the trunk's attention window (``AttributeHeadConfig.context_window``; ``None`` = full
            causal); used when a fresh head is built, and must match the model's otherwise.
        attribute_field: dataset column with one label per sequence.
        max_length / dataset_text_field / append_eos: as in ``MixCEConfig``.
        nonfinite_policy / nonfinite_check_grads / magnitude_limit / checkpoint_checksums: see
            :class:`seqlevel.trainers.guards.ReliabilityArgs` (the head's outputs are the guarded magnitude).
    """

    attribute_kind: str = field(default="binary", metadata={"help": "binary | categorical | numeric"})
    num_classes: int = field(default=2, metadata={"help": "K for a categorical head"})
    attribute_lambda: float = field(default=0.15, metadata={"help": "λ in CE + λ·L_attr (>= 0)"})
    consistency_weight: float = field(default=0.0, metadata={"help": "weight of the NADO consistency term"})
    consistency_chunk: int = field(default=256, metadata={"help": "positions per chunk for the consistency target"})
    regime: str = field(default="joint", metadata={"help": "joint | head_only"})
    head_rank: int = field(default=32, metadata={"help": "rank r of the factorised head"})
    head_block_size: int | None = field(default=None, metadata={"help": "attribute block width (default d)"})
    head_query_std: float = field(default=0.02, metadata={"help": "init std of the head's queries (fresh head)"})
    head_learning_rate: float | None = field(default=None, metadata={
        "help": "learning rate of the attribute head (default: learning_rate)"})
    head_dueling: bool = field(default=False, metadata={
        "help": "dueling head: state value + advantage centred over head_dueling_candidates (fresh head)"})
    head_dueling_candidates: list[int] | None = field(default=None, metadata={
        "help": "token ids the dueling advantage is centred over (default: the whole vocabulary)"})
    context_window: int | None = field(default=None, metadata={
        "help": "tokens each position attends to (itself + W-1 before; banded mask used in training and inference); "
                "default: full causal"})
    attribute_field: str = field(default="attribute", metadata={"help": "column with the sequence label"})
    max_length: int = field(default=512, metadata={"help": "max tokens per example, <eos> included"})
    dataset_text_field: str = field(default="text", metadata={"help": "text column of the dataset"})
    append_eos: bool = field(default=True, metadata={"help": "append <eos> to every example"})

    def __post_init__(self):
        if self.attribute_kind not in KINDS:
            raise ValueError(f"attribute_kind must be one of {KINDS}, got {self.attribute_kind!r}")
        if self.attribute_lambda < 0:
            raise ValueError(f"attribute_lambda must be >= 0, got {self.attribute_lambda}; 0 trains the LM only, "
                             "the CAT paper used 0.15")
        if self.consistency_weight < 0:
            raise ValueError(f"consistency_weight must be >= 0, got {self.consistency_weight}; 0 turns it off")
        if self.regime not in REGIMES:
            raise ValueError(f"regime must be one of {REGIMES}, got {self.regime!r}; fine-tuning and training "
                             "from scratch are both 'joint' (pass a pretrained or a fresh base)")
        if self.context_window is not None and self.context_window < 1:
            raise ValueError(f"context_window must be None (full causal attention) or >= 1, got {self.context_window}")
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise ValueError(f"head_learning_rate must be > 0 or None (= learning_rate), got {self.head_learning_rate}")
        if self.consistency_chunk < 1:
            raise ValueError(f"consistency_chunk must be >= 1, got {self.consistency_chunk}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 (one token plus <eos>), got {self.max_length}")
        self.remove_unused_columns = False  # the attribute column must reach the collator
        super().__post_init__()


@dataclass
class AttributeCollator:
    """Pads like :class:`CausalLMCollator` and adds ``attribute_labels (B,)`` (long, or float for numeric)."""

    pad_token_id: int
    kind: str
    num_classes: int = 2

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = CausalLMCollator(self.pad_token_id)(  # completion_mask: prompt/completion data, loss on the completion
            [{k: f[k] for k in ("input_ids", "completion_mask") if k in f} for f in features])
        vals = [f["attribute"] for f in features]
        if self.kind == "numeric":
            y = torch.tensor(vals, dtype=torch.float32)
        else:
            y = torch.tensor(vals)
            check_attribute_labels(y, self.kind, self.num_classes)
        batch["attribute_labels"] = y
        return batch


def _prepare(dataset, tokenizer, args: AttributeConfig):
    if dataset is None:
        return None
    if args.attribute_field not in dataset.column_names:
        raise ValueError(f"the dataset has columns {dataset.column_names} but no attribute column "
                         f"{args.attribute_field!r}; add one label per sequence or set attribute_field")
    labels = list(dataset[args.attribute_field])
    y = torch.tensor(labels, dtype=torch.float32 if args.attribute_kind == "numeric" else None)
    if args.attribute_kind != "numeric":
        check_attribute_labels(y, args.attribute_kind, args.num_classes)
    else:
        check_attribute_labels(y, "numeric")
    ds = tokenize_dataset(dataset.remove_columns([args.attribute_field]), tokenizer,
                          text_field=args.dataset_text_field, max_length=args.max_length, append_eos=args.append_eos)
    return ds.add_column("attribute", labels)


class AttributeTrainer(SafeCheckpointMixin, NumericalGuardMixin, Trainer):
    """``transformers.Trainer`` for CAT: overrides ``compute_loss`` (and saving, to write the head beside the base).

    Args:
        model: an :class:`AttributeModel`, or a causal LM (a fresh head of ``args.attribute_kind`` is attached).
        args: an :class:`AttributeConfig`.
        train_dataset / eval_dataset: ``datasets.Dataset`` with ``input_ids`` or text, plus the attribute column.
        processing_class: the tokenizer (needed for text columns and padding).
        peft_config: optional ``peft.PeftConfig`` applied to the base (joint regime).
        decision_metrics: optional ``callable(model) -> dict[str, float]``, called by :meth:`evaluate` with the
            unwrapped :class:`AttributeModel` in eval mode under ``torch.no_grad()``; its entries are logged as
            ``eval_<name>`` and can be ``metric_for_best_model``.
    """

    def __init__(self, model, args: AttributeConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, data_collator=None, peft_config=None, decision_metrics=None, **kwargs):
        args = args if args is not None else AttributeConfig(output_dir="cat_output")
        if not isinstance(args, AttributeConfig):
            raise ValueError(f"args must be an AttributeConfig, got {type(args).__name__}; build it with "
                             "AttributeConfig(output_dir=..., attribute_kind=..., attribute_lambda=...)")
        if not isinstance(model, AttributeModel):
            if peft_config is not None:
                from peft import get_peft_model

                model = get_peft_model(model, peft_config)
            model = AttributeModel.for_base(model, args.attribute_kind, args.num_classes, args.head_rank,
                                            args.head_block_size, args.head_query_std, args.context_window,
                                            args.head_dueling, args.head_dueling_candidates)
        elif peft_config is not None:
            raise ValueError("peft_config was given with an AttributeModel; apply PEFT to the base before joining "
                             "it with the head, or pass the bare causal LM")
        if model.kind != args.attribute_kind or (model.kind == "categorical"
                                                 and model.head.config.num_classes != args.num_classes):
            raise ValueError(f"the model's head is {model.kind} (K={model.head.config.num_classes}) but args ask for "
                             f"{args.attribute_kind} (K={args.num_classes}); make them agree")
        if model.context_window != args.context_window:
            raise ValueError(f"the model's context_window is {model.context_window} but args ask for "
                             f"{args.context_window}; make them agree (it is saved with the head)")
        if args.regime == "head_only":
            for p in model.base.parameters():
                p.requires_grad_(False)
        check_distributed_setup(args, model)  # FSDP that wraps nothing, batches that do not split: fail here
        train_dataset = _prepare(train_dataset, processing_class, args)
        eval_dataset = _prepare(eval_dataset, processing_class, args)
        if data_collator is None:
            pad = getattr(processing_class, "pad_token_id", None)
            if pad is None:
                pad = getattr(processing_class, "eos_token_id", None) or 0  # pads are masked out
            data_collator = AttributeCollator(pad, args.attribute_kind, args.num_classes)
        self.decision_metrics = decision_metrics
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, data_collator=data_collator, **kwargs)
        attach(self, credit_example(self))  # a credit map in the training logs (trainers/callbacks.py)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Held-out ``lm_loss`` / ``attribute_loss`` / ``loss`` (token-weighted means over ``eval_dataset``) and the
        ``decision_metrics``; logged, passed to the callbacks' ``on_evaluate``, and returned with the prefix."""
        ds = _prepare(eval_dataset, self.processing_class, self.args) if eval_dataset is not None \
            else self.eval_dataset
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        with torch.no_grad():
            if ds is not None:
                sums, count = {}, 0
                for inputs in self.get_eval_dataloader(ds):
                    inputs = self._prepare_inputs(inputs)
                    n = int((inputs["labels"][:, 1:] != -100).sum())
                    for k, v in self.cat_losses(model, inputs).items():
                        sums[k] = sums.get(k, 0.0) + float(v) * n
                    count += n
                lam = 1.0 if self.args.regime == "head_only" else self.args.attribute_lambda
                means = {k: v / max(count, 1) for k, v in sums.items()}
                total = means["lm"] + lam * means["attribute"] + self.args.consistency_weight * means.get(
                    "consistency", 0.0)
                metrics.update({f"{metric_key_prefix}_lm_loss": means["lm"],
                                f"{metric_key_prefix}_attribute_loss": means["attribute"],
                                f"{metric_key_prefix}_loss": total})
            if self.decision_metrics is not None:
                for k, v in self.decision_metrics(model).items():
                    metrics[f"{metric_key_prefix}_{k}"] = float(v)
        model.train(was_training)
        if not metrics:
            raise ValueError("nothing to evaluate: pass eval_dataset (held-out sequences with labels) and/or "
                             "decision_metrics to the AttributeTrainer")
        metrics[f"{metric_key_prefix}_epoch"] = float(self.state.epoch or 0.0)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def create_optimizer(self, model=None):
        """``Trainer``'s optimizer, with the head's parameters in their own groups at ``head_learning_rate``."""
        opt = super().create_optimizer(model)
        if self.args.head_learning_rate is None:
            return opt
        head = {id(p) for p in self.accelerator.unwrap_model(self.model).head.parameters()}
        moved = []
        for g in list(opt.param_groups):  # no step was taken yet, so there is no optimizer state to move
            mine = [p for p in g["params"] if id(p) in head]
            g["params"] = [p for p in g["params"] if id(p) not in head]
            moved += [{k: v for k, v in g.items() if k != "params"} | {"params": mine,
                                                                         "lr": self.args.head_learning_rate}] if mine else []
        opt.param_groups[:] = [g for g in opt.param_groups if g["params"]]
        for g in moved:
            opt.add_param_group(g)
        return opt

    def _load_best_model(self) -> None:
        """``load_best_model_at_end``: reload base and head from the best checkpoint (what :meth:`_save` wrote)."""
        self._load_from_checkpoint(self.state.best_model_checkpoint)

    def cat_losses(self, model, inputs: dict, num_items_in_batch=None) -> dict[str, torch.Tensor]:
        """``{"lm", "attribute", "consistency"}`` for one batch (each normalised by ``num_items_in_batch``).

        ``model`` is called through its own forward (so a DDP/FSDP wrapper sees the pass and syncs gradients); in the
        head-only regime the base's parameters are frozen, so no graph is built through the trunk.
        """
        a = self.args
        labels = inputs["labels"]
        nxt = labels[:, 1:]  # (B, T-1): x_{t+1}
        mask = nxt != -100
        head_only = a.regime == "head_only"
        out = model(inputs["input_ids"], inputs["attention_mask"], next_tokens=nxt, use_cache=False)
        hidden = out.hidden  # (B, T, d)
        attr = out.attribute  # (B, T-1, n_out), gathered at x_{t+1}: no (B, T, V, K) here
        self._head_outputs = attr.detach()[mask]  # checked for blow-up by compute_loss (trainers/guards.py)
        kw = dict(num_items_in_batch=num_items_in_batch)
        y = inputs["attribute_labels"]
        losses = {"attribute": attribute_loss(attr, y, mask, a.attribute_kind, a.num_classes, **kw)}
        losses["lm"] = (torch.zeros((), device=hidden.device) if head_only
                        else mle_loss(out.logits[:, :-1], nxt, **kw))
        if a.consistency_weight > 0:
            head = self.accelerator.unwrap_model(model).head  # target only: no gradient, no sync needed
            target = expected_attribute(head, hidden[:, 1:-1], out.logits[:, 1:-1], a.attribute_kind,
                                        a.consistency_chunk)  # (B, T-2, K): Σ_v p(v|x≤t+1) P(·|x≤t+1, v)
            both = mask[:, :-1] & mask[:, 1:]
            losses["consistency"] = consistency_loss(attr[:, :-1], target, both, a.attribute_kind, **kw)
        return losses

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses = self.cat_losses(model, inputs, num_items_in_batch)
        a = self.args
        lam = 1.0 if a.regime == "head_only" else a.attribute_lambda
        loss = losses["lm"] + lam * losses["attribute"]
        if "consistency" in losses:
            loss = loss + a.consistency_weight * losses["consistency"]
        if a.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # num_items_in_batch was summed over ranks
        loss = self.check_finite(loss, losses, {"attribute_head": self._head_outputs})  # see trainers/guards.py
        return (loss, losses) if return_outputs else loss

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume what :meth:`_save` wrote: the base (full weights, or a PEFT adapter through ``Trainer``) and the
        head beside it. ``Trainer``'s own loader would load the base's file into the joint model and match no key."""
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        weights = os.path.join(resume_from_checkpoint, "model.safetensors")
        if os.path.isfile(weights):
            result = model.base.load_state_dict(load_file(weights), strict=False)
            by_storage: dict[int, list[str]] = {}
            for k, v in model.base.state_dict().items():
                by_storage.setdefault(v.data_ptr(), []).append(k)
            tied = {k for ks in by_storage.values() if len(ks) > 1 for k in ks}  # saved once, under one name
            if result.unexpected_keys or set(result.missing_keys) - tied:
                raise ValueError(f"checkpoint {resume_from_checkpoint!r} does not match the model: missing "
                                 f"{sorted(set(result.missing_keys) - tied)}, unexpected {result.unexpected_keys}; "
                                 "resume with the base model the run was started with")
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model=model.base)
        model.head.load_state_dict(load_file(os.path.join(resume_from_checkpoint, HEAD_WEIGHTS)))

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

