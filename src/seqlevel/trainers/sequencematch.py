"""``SequenceMatchConfig`` / ``SequenceMatchTrainer``: Algorithm 1 of SequenceMatch (Cundy & Ermon, ICLR 2024, §5).

1. Add noise to the data sequences (§4.2) once, and encode them for one masked forward pass (§4.3, "Algorithm A").
2. Keep a replay buffer of the model's own rollouts, produced by the backtracking decoder (§4.4).
3. Train ``bc_warmup_steps`` optimizer steps on behaviour cloning (MLE over the augmented actions) alone.
4. Then every ``sample_every`` optimizer steps refresh the buffer (generation once per refresh, KV cache on,
   gradient checkpointing off), and train on ``(1 − w)·BC + w·SM`` where each micro-batch holds data rows and
   ``replay_batch_size`` buffer rows, all in one forward pass.

The refresh happens in :meth:`SequenceMatchTrainer.get_batch_samples`, which the Trainer calls once per optimizer
step, so gradient accumulation never triggers more generation. Every random choice the trainer makes (noise,
rollout prompts, rollout sampling, replay draws) is seeded from ``(seed, step)`` rather than carried in a stream,
and the buffer is written beside each checkpoint, so a resumed run continues exactly as the uninterrupted one.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
from transformers.modeling_outputs import CausalLMOutputWithPast

from seqlevel.backspace import add_backspace_token, augment_with_noise, collate, encode, model_inputs
from seqlevel.decoding import BanTokens, context_length, generate
from seqlevel.losses import bc_loss, sequencematch_loss
from seqlevel.losses.sequencematch import DIVERGENCES, EOS_MODES
from seqlevel.trainers.callbacks import RolloutTableCallback, attach, notify_rollouts
from seqlevel.trainers.checkpointing import SafeCheckpointMixin
from seqlevel.trainers.distributed import check_distributed_setup, rank_share, sum_over_ranks
from seqlevel.trainers.guards import NumericalGuardMixin, ReliabilityArgs
from seqlevel.trainers.prefix import prefix_skip_reason, shared_prefix_forward, shared_prefix_length
from seqlevel.trainers.replay import STATE_FILE, ReplayBuffer, Rollout

NOISE_TYPES = ("random", "task")
NOISE_ENCODINGS = ("environment", "action")
MIN_SHARED_PREFIX = 4  # shorter common prefixes run the plain forward (two model calls cost more than they save)


@dataclass
class SequenceMatchConfig(ReliabilityArgs, TrainingArguments):
    """Training arguments for :class:`SequenceMatchTrainer`; every ``TrainingArguments`` field works as usual.

    Args:
        divergence: occupancy divergence, one of ``chi2_mix`` (default, the paper's), ``chi2``, ``kl``,
            ``reverse_kl``, ``js``, ``hellinger``, ``tv``.
        gamma: discount γ ∈ (0, 1) of the occupancy measure; the paper used 0.998. On short sequences most of the
            occupancy then sits in the absorbing tail after ``<eos>``; a smaller γ weights the actions more.
        eos_handling: ``"absorbing"`` (closed-form tail after ``<eos>``, §3.5 option A), ``"absorbing_eos"``
            (the same tail with the absorbing state's value read from its ``<eos>`` logit alone, the state having
            no other action: it removes the shock an untrained post-``<eos>`` softmax gives a network when
            SequenceMatch starts, but did not improve the end result; see :mod:`seqlevel.losses.sequencematch`)
            or ``"done"`` (IQ-Learn done-masking, V(terminal) = 0).
        chi2_weight: the weight ``c`` of the χ² terms on both sides: ``φ(r) = r − c·r²`` on data rows and
            ``c·Ê_M[r²]`` on model rows (RECON; our reading of the paper's "α = 0.01"). ¼ is the literal
            ``φ(x) = x − x²/4``; the ``r²`` terms pull the policy towards maximum entropy with weight ``c``
            (see :mod:`seqlevel.losses.sequencematch` and docs/results.md for what the tabular instrument measured).
        model_reg: override of the model-side ``r²`` weight alone (None: ``chi2_weight``).
        occupancy_normalize: multiply the SM loss by ``(1 − γ)`` (an expectation under the normalised occupancy).
        value_on_truncated: also put rollouts cut at ``max_new_actions`` in the value term (default False: only
            complete rollouts, for which the value term telescopes; see :func:`seqlevel.losses.sequencematch_loss`).
        model_mix: weight of model rows in the value term's mixture occupancy (½: IQ-Learn's 50/50 batches).
        bc_warmup_steps: optimizer steps of behaviour cloning alone before SequenceMatch starts (Algorithm 1).
        sm_weight: the convex weight ``w`` of the SequenceMatch loss after warm-up: ``(1 − w)·BC + w·SM``;
            0 is pure BC (the "bc" baseline), 1 is SequenceMatch alone.
        sm_weight_ramp_steps: after warm-up, ``w`` rises linearly from 0 to ``sm_weight`` over this many steps.
        p_noise: probability of a noise insertion before each data action (§4.2); 0 gives clean data.
        noise_type: ``"random"`` (uniform over non-special tokens) or ``"task"`` (the callable passed as
            ``SequenceMatchTrainer(noise_fn=...)``, e.g. :func:`seqlevel.tasks.arithmetic.task_noise`).
        noise_max_run: longest run of noise tokens per insertion (each run is followed by as many ``<bksp>``).
        noise_encoding: ``"environment"`` (§4.2 option A: noise is never a target) or ``"action"`` (option B).
        use_backspace: add ``<bksp>`` to the action space. False with ``p_noise=0`` and ``sm_weight=0`` is MLE.
        replay_buffer_size: the most model rollouts kept (FIFO); at least ``replay_batch_size``.
        replay_batch_size: model rows per micro-batch during SequenceMatch; default ``per_device_train_batch_size``.
        sample_every: optimizer steps between buffer refreshes (``k_sample``); >= 1.
        rollouts_per_refresh: rollouts generated at each refresh.
        rollout_temperature: sampling temperature of the rollouts (1.0: the model's own policy).
        max_new_actions: cap on actions per rollout (tokens, ``<eos>`` and ``<bksp>`` all count).
        max_length: data sequences (prompt + completion) are truncated to this many tokens before noise.
        dataset_text_field: text column used when the dataset has neither ``prompt_ids``/``completion_ids`` nor
            ``prompt``/``completion``.
        append_eos: append ``<eos>`` to completions that do not end with it.
        model_init_kwargs: kwargs for ``AutoModelForCausalLM.from_pretrained`` when ``model`` is a string.
        share_prompt_prefix: when every row of a micro-batch starts with the same tokens (e.g. the arithmetic
            prompts' ``"<bos>In base "``), run the model once on that common prefix and the rest of every row on
            its expanded KV cache (:mod:`seqlevel.trainers.prefix`). The loss and the gradients equal the plain
            forward's up to float rounding (a different summation order; tests/trainers/test_prefix.py). Skipped
            for a micro-batch whose common prefix is shorter than ``MIN_SHARED_PREFIX`` slots, and for models in
            training mode with any dropout above 0 (one dropout mask would be shared), attention other than
            SDPA/eager, gradient checkpointing, wrapped models (PEFT, DDP/FSDP, compiled) and several processes.
        nonfinite_policy / nonfinite_check_grads / magnitude_limit / checkpoint_checksums: see
            :class:`seqlevel.trainers.guards.ReliabilityArgs` (V and r are the guarded magnitudes).
    """

    divergence: str = field(default="chi2_mix", metadata={"help": f"one of {DIVERGENCES}"})
    gamma: float = field(default=0.998, metadata={"help": "discount in (0, 1); the paper used 0.998"})
    eos_handling: str = field(default="absorbing", metadata={"help": "absorbing | absorbing_eos | done"})
    chi2_weight: float = field(default=0.01, metadata={"help": "weight c of the χ² terms: φ(r) = r − c r² on data, "
                                                               "c·E_model[r²] (0.25 = the literal x − x²/4)"})
    model_reg: float | None = field(default=None, metadata={"help": "model-side r² weight (default chi2_weight)"})
    occupancy_normalize: bool = field(default=True, metadata={"help": "scale the SM loss by (1 − γ)"})
    value_on_truncated: bool = field(default=False, metadata={"help": "value term also on rollouts cut at "
                                                                      "max_new_actions"})
    model_mix: float = field(default=0.5, metadata={"help": "weight of model rows in the value term"})
    bc_warmup_steps: int = field(default=100, metadata={"help": "behaviour-cloning steps before SequenceMatch"})
    sm_weight: float = field(default=0.5, metadata={"help": "convex weight w of SM: (1-w) BC + w SM"})
    sm_weight_ramp_steps: int = field(default=0, metadata={"help": "linear ramp of w after warm-up (steps)"})
    p_noise: float = field(default=0.1, metadata={"help": "noise insertion probability per data action"})
    noise_type: str = field(default="random", metadata={"help": "random | task (noise_fn given to the trainer)"})
    noise_max_run: int = field(default=1, metadata={"help": "longest noise run per insertion"})
    noise_encoding: str = field(default="environment", metadata={"help": "environment | action (§4.2 A/B)"})
    use_backspace: bool = field(default=True, metadata={"help": "add <bksp> to the action space"})
    replay_buffer_size: int = field(default=256, metadata={"help": "most model rollouts kept (FIFO)"})
    replay_batch_size: int | None = field(default=None, metadata={"help": "model rows per micro-batch"})
    sample_every: int = field(default=4, metadata={"help": "optimizer steps between buffer refreshes"})
    rollouts_per_refresh: int = field(default=32, metadata={"help": "rollouts generated per refresh"})
    rollout_temperature: float = field(default=1.0, metadata={"help": "sampling temperature of rollouts"})
    max_new_actions: int = field(default=64, metadata={"help": "cap on actions per rollout"})
    max_length: int = field(default=512, metadata={"help": "max data tokens (prompt + completion)"})
    dataset_text_field: str = field(default="text", metadata={"help": "text column of the dataset"})
    append_eos: bool = field(default=True, metadata={"help": "append <eos> to completions"})
    model_init_kwargs: dict | None = field(default=None, metadata={"help": "kwargs for from_pretrained"})
    share_prompt_prefix: bool = field(default=True, metadata={"help": "run the rows' common prompt prefix once "
                                                                      "(same result up to float rounding)"})

    def __post_init__(self):
        if self.divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {DIVERGENCES}, got {self.divergence!r}; "
                             "'chi2_mix' is the paper's recommended choice")
        if not 0.0 < self.gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}; the paper used 0.998")
        if self.eos_handling not in EOS_MODES:
            raise ValueError(f"eos_handling must be one of {EOS_MODES}, got {self.eos_handling!r}")
        if not self.chi2_weight >= 0:
            raise ValueError(f"chi2_weight must be >= 0, got {self.chi2_weight}; 0.01 is the default, 0.25 the "
                             "literal φ(x) = x − x²/4")
        if (self.model_reg is not None and self.model_reg < 0) or not 0.0 <= self.model_mix <= 1.0:
            raise ValueError(f"need model_reg >= 0 (or None) and model_mix in [0, 1], got {self.model_reg}, "
                             f"{self.model_mix}")
        if self.bc_warmup_steps < 0:
            raise ValueError(f"bc_warmup_steps must be >= 0, got {self.bc_warmup_steps}")
        if not 0.0 <= self.sm_weight <= 1.0:
            raise ValueError(f"sm_weight must be in [0, 1], got {self.sm_weight}; it is the convex weight of SM "
                             "against BC (0 = BC only, 1 = SM only)")
        if self.sm_weight_ramp_steps < 0:
            raise ValueError(f"sm_weight_ramp_steps must be >= 0, got {self.sm_weight_ramp_steps}")
        if not 0.0 <= self.p_noise <= 1.0:
            raise ValueError(f"p_noise must be in [0, 1], got {self.p_noise}; 0 trains on the clean data")
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {self.noise_type!r}; for 'task' pass "
                             "SequenceMatchTrainer(noise_fn=...)")
        if self.noise_max_run < 1:
            raise ValueError(f"noise_max_run must be >= 1, got {self.noise_max_run}")
        if self.noise_encoding not in NOISE_ENCODINGS:
            raise ValueError(f"noise_encoding must be one of {NOISE_ENCODINGS}, got {self.noise_encoding!r}")
        if not self.use_backspace and self.p_noise > 0:
            raise ValueError(f"p_noise={self.p_noise} needs use_backspace=True: noise is only undone by <bksp>; "
                             "set p_noise=0 for MLE without backspace")
        if self.sample_every <= 0:
            raise ValueError(f"sample_every must be >= 1 (optimizer steps between rollout refreshes), "
                             f"got {self.sample_every}")
        if self.rollouts_per_refresh < 1:
            raise ValueError(f"rollouts_per_refresh must be >= 1, got {self.rollouts_per_refresh}")
        if self.replay_batch_size is None:
            self.replay_batch_size = self.per_device_train_batch_size
        if self.replay_batch_size < 1:
            raise ValueError(f"replay_batch_size must be >= 1, got {self.replay_batch_size}")
        if self.replay_buffer_size < self.replay_batch_size:
            raise ValueError(f"replay_buffer_size={self.replay_buffer_size} is smaller than one batch of model "
                             f"rows (replay_batch_size={self.replay_batch_size}); raise replay_buffer_size to at "
                             f"least {self.replay_batch_size}")
        if not self.rollout_temperature > 0:
            raise ValueError(f"rollout_temperature must be > 0, got {self.rollout_temperature}")
        if self.max_new_actions < 1:
            raise ValueError(f"max_new_actions must be >= 1, got {self.max_new_actions}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.output_dir is not None and os.path.isfile(self.output_dir):
            raise ValueError(f"output_dir {self.output_dir!r} is a file; pass a directory path")
        self.remove_unused_columns = False  # the trainer builds its own index dataset
        super().__post_init__()


def _examples(dataset, tokenizer, args: SequenceMatchConfig) -> list[tuple[list[int], list[int]]]:
    """``(prompt_ids, completion_ids)`` per example from token-id, prompt/completion or text columns."""
    if dataset is None or len(dataset) == 0:
        raise ValueError("train_dataset is empty; pass a datasets.Dataset with 'prompt_ids'/'completion_ids', "
                         f"'prompt'/'completion' or '{args.dataset_text_field}' columns")
    cols = dataset.column_names
    eos = getattr(tokenizer, "eos_token_id", None)
    bos = getattr(tokenizer, "bos_token_id", None)
    if "prompt_ids" in cols and "completion_ids" in cols:
        pairs = [(list(map(int, p)), list(map(int, c))) for p, c in zip(dataset["prompt_ids"], dataset["completion_ids"])]
    elif "prompt" in cols and "completion" in cols:
        enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        pairs = [(([bos] if bos is not None else []) + enc(p), enc(c)) for p, c in zip(dataset["prompt"], dataset["completion"])]
    elif args.dataset_text_field in cols:
        if bos is None:
            raise ValueError("text datasets need a tokenizer with a bos_token (the empty prompt's state)")
        pairs = [([bos], tokenizer(t, add_special_tokens=False)["input_ids"]) for t in dataset[args.dataset_text_field]]
    else:
        raise ValueError(f"the dataset has columns {cols}; it needs 'prompt_ids' + 'completion_ids', 'prompt' + "
                         f"'completion', or '{args.dataset_text_field}'")
    out = []
    for p, c in pairs:
        if not p:
            raise ValueError("an example has an empty prompt; the first state needs a token such as <bos>")
        c = c[: max(0, args.max_length - len(p) - 1)]
        if args.append_eos and eos is not None and (not c or c[-1] != eos):
            c = c + [eos]
        out.append((p, c))
    if not any(c for _, c in out):
        raise ValueError("no example has any target token (every completion is empty); SequenceMatch needs actions "
                         "to imitate: check the completion column or the tokenizer")
    return out


def gradient_shares(terms: dict, batch: dict, backspace_id: int, args) -> dict[str, float]:
    """Where the SM gradient goes: the share of ``Σ |∂L_SM/∂r|`` on ordinary token slots, ``<bksp>`` slots and the
    absorbing tail after ``<eos>``, on data rows and on model rows (``sm/grad_share_{data,model}_{token,bksp,tail}``).

    ``∂L/∂r`` per slot is analytic: ``−occ·φ'(r)`` on data rows and ``2·c_M·occ·r`` on model rows (``occ``: the
    slot's occupancy weight, γ^i or γ^K/(1 − γ) at the tail); for the share, row normalisers cancel within a side.
    A side with no gradient mass is left out.
    """
    return {k: float(v) for k, v in gradient_share_tensors(terms, batch, backspace_id, args).items()
            if not math.isnan(float(v))}


def gradient_share_tensors(terms: dict, batch: dict, backspace_id: int, args) -> dict[str, torch.Tensor]:
    """:func:`gradient_shares` as 0-d tensors, computed without a host sync (NaN for a side with no mass)."""
    r, occ, has = terms["r"], terms["r_weight"], terms["has_r"]
    labels, is_d = batch["labels"].to(r.device), batch["is_data"].to(r.device)[:, None]
    tail = batch["eos_abs"].to(r.device) & has
    c = args.chi2_weight
    c_m = args.model_reg if args.model_reg is not None else c
    if args.divergence in ("chi2", "chi2_mix"):
        g_data = (1.0 - 2.0 * c * r).abs()
    else:
        g_data = torch.ones_like(r)  # other φ': only the occupancy weights are compared
    g_model = (2.0 * c_m * r).abs() if args.divergence == "chi2_mix" else torch.zeros_like(r)
    bk = (labels == backspace_id) & ~tail
    out = {}
    for side, sel, g in (("data", is_d & has, g_data), ("model", ~is_d & has, g_model)):
        mass = (occ * g * sel).detach()
        total = mass.sum()
        total = torch.where(total > 0, total, torch.full_like(total, float("nan")))
        out[f"sm/grad_share_{side}_tail"] = (mass * tail).sum() / total
        out[f"sm/grad_share_{side}_bksp"] = (mass * bk).sum() / total
        out[f"sm/grad_share_{side}_token"] = (mass * (~tail & ~bk)).sum() / total
    return out


def _masked_mean_std(x: torch.Tensor, sel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sample standard deviation of ``x[sel]`` (0 for one element; NaN mean for none), as 0-d tensors,
    without the host sync a boolean index costs."""
    x, n = x.detach().float(), sel.sum()
    mean = (x * sel).sum() / n
    var = (((x - mean) * sel) ** 2).sum() / (n - 1).clamp(min=1)
    return mean, var.sqrt()


def _mask_format(model) -> str:
    """``"bool"`` for a model on SDPA attention, else ``"float"`` (the additive mask eager attention needs).

    SDPA turns a boolean mask into an additive ``-inf`` one inside the kernel; the float mask's ``finfo.min``
    gives the same exact zeros after the softmax (every slot attends at least itself), so logits and gradients are
    bit-identical (tests/trainers/test_sequencematch_trainer.py), and the boolean one is cheaper to read (about 7%
    of the attention's time on CPU).
    """
    config = getattr(model, "config", None)
    return "bool" if getattr(config, "_attn_implementation", None) == "sdpa" else "float"


class _IndexCollator:
    """Batches of dataset indices; the trainer turns them into encoded trajectories (see ``get_batch_samples``)."""

    def __call__(self, features):
        return {"sm_index": torch.tensor([int(f["sm_index"]) for f in features], dtype=torch.long)}


def _apply_peft(model, peft_config, backspace_id: int | None):
    """``get_peft_model`` with the ``<bksp>`` rows trainable (added to a copy of the config when it names none)."""
    import copy

    from peft import PeftModel, get_peft_model

    from seqlevel.trainers.peft import backspace_lora_config, check_rows_trainable

    if isinstance(model, PeftModel):
        raise ValueError("peft_config was given with a model that is already a PeftModel; pass the bare causal LM "
                         "(the trainer adds <bksp> and then applies the config) or drop peft_config")
    if (backspace_id is not None and getattr(peft_config, "trainable_token_indices", None) is None
            and not getattr(peft_config, "modules_to_save", None) and hasattr(peft_config, "trainable_token_indices")):
        peft_config = copy.copy(peft_config)
        peft_config.trainable_token_indices = backspace_lora_config(model, backspace_id).trainable_token_indices
    model = get_peft_model(model, peft_config)
    if backspace_id is not None:
        check_rows_trainable(model, backspace_id)
    return model


class SequenceMatchTrainer(SafeCheckpointMixin, NumericalGuardMixin, Trainer):
    """``transformers.Trainer`` running SequenceMatch's Algorithm 1 (see the module docstring).

    Args:
        model: a ``PreTrainedModel`` or a model name/path for ``AutoModelForCausalLM.from_pretrained``.
        args: a :class:`SequenceMatchConfig`.
        train_dataset: ``datasets.Dataset`` with ``prompt_ids``/``completion_ids`` (token ids), ``prompt``/
            ``completion`` (text) or a text column; the prompts also seed the rollouts.
        processing_class: the tokenizer; ``<bksp>`` is added to it (and a row to the model) when missing.
        noise_fn: ``noise(prefix, target, rng) -> token id`` for ``noise_type="task"``.
        peft_config: optional ``peft.PeftConfig`` applied after ``<bksp>`` is added; when it names no
            ``trainable_token_indices`` (nor ``modules_to_save``), the ``<bksp>`` rows are added to it as
            :func:`seqlevel.trainers.peft.backspace_lora_config` does, since a new action has no pretrained row.
        **kwargs: passed to ``transformers.Trainer`` (callbacks, optimizers, eval_dataset, ...).

    Raises:
        ValueError: a context shorter than prompt + ``max_new_actions``, data with no targets, a missing
            ``noise_fn``, a PEFT config that freezes the ``<bksp>`` rows, distributed settings that cannot work
            (:func:`seqlevel.trainers.distributed.check_distributed_setup`), and the config errors of
            :class:`SequenceMatchConfig`.
    """

    _name = "SequenceMatch"
    _paper = "SequenceMatch: Imitation Learning for Autoregressive Sequence Modelling with Backtracking (ICLR 2024)"
    loss_is_scaled_for_ga = True  # compute_loss divides by the whole optimizer step's counts

    def __init__(self, model, args: SequenceMatchConfig | None = None, train_dataset=None, processing_class=None,
                 noise_fn=None, peft_config=None, **kwargs):
        args = args if args is not None else SequenceMatchConfig(output_dir="sequencematch_output")
        if not isinstance(args, SequenceMatchConfig):
            raise ValueError(f"args must be a SequenceMatchConfig, got {type(args).__name__}; build it with "
                             "SequenceMatchConfig(output_dir=..., p_noise=..., bc_warmup_steps=...)")
        if isinstance(model, str):
            if processing_class is None:
                processing_class = AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, **(args.model_init_kwargs or {}))
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required: it gets the <bksp> token")
        if args.noise_type == "task" and noise_fn is None and args.p_noise > 0:
            raise ValueError("noise_type='task' needs SequenceMatchTrainer(noise_fn=noise) with "
                             "noise(prefix, target, rng) -> token id, e.g. seqlevel.tasks.arithmetic.task_noise(tok)")
        tok = processing_class
        self.backspace_id = add_backspace_token(model, tok) if args.use_backspace else -1
        if peft_config is not None:
            model = _apply_peft(model, peft_config, self.backspace_id if args.use_backspace else None)
        check_distributed_setup(args, model)  # FSDP that wraps nothing, rollouts the ranks cannot share: fail here
        self.eos_id = int(tok.eos_token_id) if tok.eos_token_id is not None else None
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos_id
        self.pad_id = int(pad if pad is not None else 0)
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.context_length = context_length(model)
        self._check_vocab = self.vocab_size if args.use_backspace else None  # id -1 never occurs without <bksp>
        self.ban = BanTokens([tok.pad_token_id, tok.bos_token_id, tok.unk_token_id])

        examples = _examples(train_dataset, tok, args)
        longest_prompt = max(len(p) for p, _ in examples)
        if self.context_length is not None and longest_prompt + args.max_new_actions > self.context_length:
            raise ValueError(
                f"the model's context is {self.context_length} tokens but a rollout may need the longest prompt "
                f"({longest_prompt}) + max_new_actions ({args.max_new_actions}) = "
                f"{longest_prompt + args.max_new_actions} slots (one per action, backspaces included); lower "
                f"max_new_actions to at most {self.context_length - longest_prompt} or use a longer-context model")
        self.prompts = [p for p, _ in examples]
        self.data_encoded = self._augment_and_encode(examples, args, noise_fn, tok)
        self.replay = ReplayBuffer(args.replay_buffer_size)
        self._refreshed_at = -1
        self._sm_logs: dict[str, list[float]] = {}

        import datasets

        index_ds = datasets.Dataset.from_dict({"sm_index": list(range(len(examples)))})
        super().__init__(model=model, args=args, train_dataset=index_ds, processing_class=tok,
                         data_collator=_IndexCollator(), **kwargs)
        attach(self, RolloutTableCallback())  # rollout tables in the training logs (trainers/callbacks.py)

    # ----- data ---------------------------------------------------------------------------------------------
    def _augment_and_encode(self, examples, args, noise_fn, tok):
        noise = noise_fn if args.noise_type == "task" else "random"
        specials = [i for i in (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) if i is not None]
        out = []
        for i, (p, c) in enumerate(examples):
            if args.p_noise > 0:
                prompt, actions = augment_with_noise(
                    p + c, args.p_noise, noise, args.noise_max_run, random.Random(f"{args.seed}-noise-{i}"),
                    backspace_id=self.backspace_id, vocab_size=self.vocab_size, prompt_len=len(p),
                    mode=args.noise_encoding, exclude_ids=specials)
            else:
                prompt, actions = p, c
            out.append(encode(prompt, actions, self.backspace_id, eos_id=self.eos_id, is_data=True,
                              vocab_size=self._check_vocab, max_length=self.context_length))
        return out

    # ----- schedule -----------------------------------------------------------------------------------------
    def sm_weight_at(self, step: int) -> float:
        """The convex weight ``w`` of the SequenceMatch loss at optimizer step ``step`` (0 during warm-up)."""
        a = self.args
        if step < a.bc_warmup_steps or a.sm_weight == 0:
            return 0.0
        if a.sm_weight_ramp_steps > 0:
            return a.sm_weight * min(1.0, (step - a.bc_warmup_steps + 1) / a.sm_weight_ramp_steps)
        return a.sm_weight

    # ----- rollouts -----------------------------------------------------------------------------------------
    def refresh_buffer(self, step: int) -> None:
        """Generate ``rollouts_per_refresh`` rollouts with the backtracking decoder and add them to the buffer.

        KV cache on, gradient checkpointing off, eval mode (no dropout) for the generation; the prompts and the
        sampling are seeded from ``(seed, step)``. Under DDP the prompts are one draw shared by all ranks and each
        rank generates its share (:func:`rank_share`), so the union over ranks is the single-process refresh.
        """
        a = self.args
        model = self.accelerator.unwrap_model(self.model)
        was_training, gc = model.training, bool(a.gradient_checkpointing)
        if gc:
            model.gradient_checkpointing_disable()
        model.eval()
        try:
            rng = np.random.default_rng([a.seed, step, 1])  # rank-independent: one global draw
            idx = rng.choice(len(self.prompts), size=a.rollouts_per_refresh, replace=len(self.prompts) < a.rollouts_per_refresh)
            idx = rank_share(idx, a.world_size, a.process_index)  # this rank's share of the step's rollouts
            prompts = [self.prompts[int(i)] for i in idx]
            W = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), W), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(prompts), W), dtype=torch.long)
            for r, p in enumerate(prompts):
                ids[r, : len(p)] = torch.tensor(p)
                mask[r, : len(p)] = 1
            # generate runs under torch.inference_mode and returns ordinary tensors (callbacks may update them)
            out = generate(model, ids, mask, max_new_actions=a.max_new_actions, eos_token_id=self.eos_id,
                           backspace_id=self.backspace_id if a.use_backspace else None, do_sample=True,
                           temperature=a.rollout_temperature, steer=self.ban,
                           seed=int(rng.integers(2**31 - 1)) + a.process_index)
        finally:
            if gc:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=a.gradient_checkpointing_kwargs)
            model.train(was_training)
        rollouts = []
        for p, acts in zip(out.prompts, out.actions):
            if not acts:
                continue
            rollouts.append(Rollout(p, acts, step))
        self.replay.add(rollouts)
        self._refreshed_at = step
        notify_rollouts(self, out, self.backspace_id if a.use_backspace else None)  # e.g. RolloutTableCallback

    def _encoded_rollout(self, r: Rollout):
        if r.encoded is None:
            r.encoded = encode(r.prompt, r.actions, self.backspace_id, eos_id=self.eos_id, is_data=False,
                               vocab_size=self._check_vocab, max_length=self.context_length)
        return r.encoded

    # ----- one optimizer step's batches ---------------------------------------------------------------------
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Pull the step's micro-batches, refresh the buffer when due, and build data + replay batches.

        Returns ``(batches, n_bc_targets)``; the sequence counts of the step are kept for :meth:`compute_loss`.
        """
        raw = []
        for _ in range(num_batches):
            try:
                raw.append(next(epoch_iterator))
            except StopIteration:
                break
        step = self.state.global_step
        w = self.sm_weight_at(step)
        a = self.args
        if w > 0 and self._refreshed_at != step and (
                len(self.replay) == 0 or (step - a.bc_warmup_steps) % a.sample_every == 0):
            self.refresh_buffer(step)
        dtype = next(self.model.parameters()).dtype
        mask_format = _mask_format(self.model)
        batches = []
        for i, rb in enumerate(raw):
            enc = [self.data_encoded[int(j)] for j in rb["sm_index"]]
            if w > 0 and len(self.replay):
                rng = np.random.default_rng([a.seed, a.process_index, step, 2, i])
                enc = enc + [self._encoded_rollout(r) for r in self.replay.sample(a.replay_batch_size, rng)]
            batch = collate(enc, self.pad_id, dtype=dtype if dtype.is_floating_point else torch.float32,
                            mask_format=mask_format, max_length=self.context_length)
            batch["sm_weight"] = torch.tensor(w)
            batches.append(batch)
        n_bc = sum(int((b["valid"] & b["is_data"][:, None] & (b["labels"] != -100)).sum()) for b in batches)
        n_d, n_m = sum(int(b["is_data"].sum()) for b in batches), sum(int((~b["is_data"]).sum()) for b in batches)
        n_mc = sum(int((~b["is_data"] & b["eos_abs"].any(1)).sum()) for b in batches)  # complete model rows
        if a.average_tokens_across_devices:  # the whole step's counts over all ranks (compute_loss undoes DDP's mean)
            n_bc, n_d, n_m, n_mc = sum_over_ranks(self.accelerator, [n_bc, n_d, n_m, n_mc], device)
        self._step_counts = (max(n_bc, 1), n_d, n_m, n_mc)
        return batches, torch.tensor(max(n_bc, 1), device=device)

    # ----- loss ---------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """``(1 − w)·BC + w·SM`` on one micro-batch, normalised by the optimizer step's counts (exact under
        gradient accumulation: BC by its targets, SM by its data and model sequences)."""
        a = self.args
        counts = getattr(self, "_step_counts", None)
        if counts is None:  # called outside get_batch_samples (e.g. by hand): this batch is the whole step
            counts = (max(int((inputs["valid"] & inputs["is_data"][:, None] & (inputs["labels"] != -100)).sum()), 1),
                      int(inputs["is_data"].sum()), int((~inputs["is_data"]).sum()),
                      int((~inputs["is_data"] & inputs["eos_abs"].any(1)).sum()))
        n_bc, n_d, n_m, n_mc = counts
        w = float(inputs.get("sm_weight", torch.tensor(0.0)))
        outputs = self._forward(model, inputs)
        logits = outputs.logits  # (B, T, A): slot t scores labels[:, t], no shift
        bc = bc_loss(logits, inputs, num_items_in_batch=n_bc)
        loss = bc * (1.0 - w)
        guarded, magnitudes = {"bc": bc}, {}
        log = self._sm_logs
        if w > 0:
            sm, terms = sequencematch_loss(logits, inputs, a.divergence, a.gamma, a.eos_handling,
                                           chi2_weight=a.chi2_weight, model_reg=a.model_reg, model_mix=a.model_mix,
                                           occupancy_normalize=a.occupancy_normalize,
                                           value_on_truncated=a.value_on_truncated,
                                           num_sequences=(n_d, n_m, n_mc), return_terms=True)
            loss = loss + w * sm
            guarded["sm"] = sm
            magnitudes = {"V": terms["V"][terms["has_r"]], "r": terms["r"][terms["has_r"]]}
            # statistics stay 0-d tensors until log() (no host sync per step); NaN where a side is empty
            is_d = inputs["is_data"][:, None]
            has_r = terms["has_r"]
            for name, sel in (("data", has_r & is_d), ("model", has_r & ~is_d)):
                r_mean, r_std = _masked_mean_std(terms["r"], sel)
                log.setdefault(f"sm/r_mean_{name}", []).append(r_mean)
                log.setdefault(f"sm/r_std_{name}", []).append(r_std)
                log.setdefault(f"sm/V_mean_{name}", []).append(_masked_mean_std(terms["V"], sel)[0])
            log.setdefault("sm/loss_sm", []).append(sm.detach())
            for k, v in gradient_share_tensors(terms, inputs, self.backspace_id, a).items():
                log.setdefault(k, []).append(v)
        log.setdefault("sm/weight", []).append(w)
        if a.use_backspace:
            dm = inputs["valid"] & inputs["is_data"][:, None]
            log.setdefault("sm/data_backspace_rate", []).append(
                ((inputs["labels"] == self.backspace_id) & dm).sum() / dm.sum())
        if a.average_tokens_across_devices and self.accelerator.num_processes > 1:
            loss = loss * self.accelerator.num_processes
        loss = self.check_finite(loss, guarded, magnitudes)  # see trainers/guards.py
        return (loss, outputs) if return_outputs else loss

    def _forward(self, model, inputs):
        """The model's outputs on the batch; logits only through the shared-prefix forward when it applies."""
        a = self.args
        if a.share_prompt_prefix and prefix_skip_reason(model, gradient_checkpointing=bool(a.gradient_checkpointing),
                                                        world_size=a.world_size) is None:
            L = shared_prefix_length(inputs)
            if L >= MIN_SHARED_PREFIX and L < inputs["input_ids"].shape[1]:
                return CausalLMOutputWithPast(logits=shared_prefix_forward(model, model_inputs(inputs), L))
        return model(**model_inputs(inputs), use_cache=False)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the means of V, r, the SM weight and backspace rates since the last log, and buffer statistics."""
        if "loss" in logs:
            for k, v in self._sm_logs.items():
                x = np.array([float(t) for t in v], dtype=float)  # the steps' tensors: one sync per log, not per step
                if not np.isnan(x).all():  # NaN: a step where the statistic's side was empty
                    logs[k] = float(np.nanmean(x))
            self._sm_logs = {}
            if self.args.use_backspace:
                logs.update(self.replay.stats(self.state.global_step, self.backspace_id))
        super().log(logs, start_time)

    # ----- checkpoints --------------------------------------------------------------------------------------
    def _replay_file(self) -> str:
        """One buffer per rank under DDP (each rank holds its own rollouts), named like the Trainer's RNG files."""
        a = self.args
        return STATE_FILE if a.world_size <= 1 else STATE_FILE.replace(".json", f"-rank{a.process_index}.json")

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)  # runs on every rank, before the manifest (checkpointing.py) is written
        self.replay.save(output_dir, self._replay_file())  # the buffer is part of the training state, like the RNG

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """``Trainer.train``; on resume the replay buffer is restored from the checkpoint before the first step."""
        ckpt = self.resolve_checkpoint(resume_from_checkpoint)  # the last *complete* checkpoint (checkpointing.py)
        if isinstance(ckpt, str):
            self.replay.load(ckpt, self._replay_file())
            self._refreshed_at = -1
        return super().train(resume_from_checkpoint=ckpt, trial=trial, **kwargs)
