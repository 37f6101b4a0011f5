"""Numerical guards: a non-finite loss, loss term, gradient or a blown-up magnitude is caught where it happens.

Every seqlevel trainer ends its ``compute_loss`` with ``loss = self.check_finite(loss, terms, magnitudes)``:

* ``terms``: the named loss terms of the micro-batch (MixCE: the objective; SequenceMatch: ``bc``, ``sm``; CAT:
  ``lm``, ``attribute``, ``consistency``), so a report names the term that went non-finite;
* ``magnitudes``: tensors whose size is a leading sign of trouble in fp16/bf16 (SequenceMatch's ``V`` and ``r``,
  the CAT head's outputs); their largest ``|x|`` must stay below ``magnitude_limit`` (default
  ``finfo(dtype).max / 16`` of the training dtype, e.g. 4094 in fp16, so fp32 only flags inf/NaN).

After the backward of each micro-batch the gradients are checked too (one fused norm over them); when one is
non-finite the micro-batch is recomputed once, term by term, to name the term whose gradient is non-finite.

Policies (``nonfinite_policy`` in the config):

* ``"stop"`` (default): raise :class:`NonFiniteError` with the optimizer step, the micro-batch index and the term;
* ``"skip"``: warn, drop the micro-batch (its loss is replaced by a zero that still touches every trainable
  parameter, so DDP sees all gradients), drop the optimizer step when no micro-batch of it survived or a gradient
  was non-finite (gradients set to ``None``, so the optimizer leaves weights and moments alone; the learning-rate
  schedule still advances, so a resumed or repeated run stays on the same schedule), and count each
  drop in the logged ``nonfinite_skipped`` (cumulative, restored on resume from the log history).

Under fp16 with a gradient scaler, inf/NaN gradients are the scaler's normal overflow signal (it skips the step
and lowers the scale), so the gradient check is off there; the loss and magnitude checks stay on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback

POLICIES = ("stop", "skip")
# The term whose running mean is logged as 'nll' (TensorBoard: train/nll): the plain per-token NLL, comparable
# across objectives. MixCE family: the ``nll`` argument of check_finite (the objective itself for mle); CAT: its LM term; SequenceMatch: the
# behaviour-cloning NLL of the (noise-augmented) data actions.
NLL_TERMS = ("mle", "lm", "bc")
logger = logging.getLogger(__name__)


class NonFiniteError(ValueError, FloatingPointError):
    """A non-finite loss, loss term or gradient (or a blown-up magnitude) under ``nonfinite_policy="stop"``."""


@dataclass
class ReliabilityArgs:
    """Config fields shared by every seqlevel trainer config (put it before ``TrainingArguments`` in the bases).

    Args:
        nonfinite_policy: ``"stop"`` (raise with step, micro-batch and term) or ``"skip"`` (drop and count).
        nonfinite_check_grads: also check gradients after each micro-batch's backward (one fused norm).
        magnitude_limit: largest allowed ``|x|`` of the guarded magnitudes (SequenceMatch V and r, CAT head
            outputs); ``None`` is ``finfo(dtype).max / 16`` of the training dtype.
        checkpoint_checksums: record sha256 of every checkpoint file in its manifest (sizes are always recorded).
    """

    nonfinite_policy: str = field(default="stop", metadata={"help": "stop | skip: what a non-finite loss does"})
    nonfinite_check_grads: bool = field(default=True, metadata={"help": "check gradients for inf/NaN"})
    magnitude_limit: float | None = field(default=None, metadata={"help": "max |V|, |r|, |head output|"})
    checkpoint_checksums: bool = field(default=False, metadata={"help": "sha256 of checkpoint files"})

    def __post_init__(self):
        if self.nonfinite_policy not in POLICIES:
            raise ValueError(f"nonfinite_policy must be one of {POLICIES}, got {self.nonfinite_policy!r}; 'stop' "
                             "raises with the step and term, 'skip' drops the batch and counts it")
        if self.magnitude_limit is not None and not self.magnitude_limit > 0:
            raise ValueError(f"magnitude_limit must be > 0 (or None for the dtype's default), "
                             f"got {self.magnitude_limit}")
        _check_trainer_numbers(self)
        if self.dataloader_pin_memory and not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU torch warns and ignores it
        super().__post_init__()


def _check_trainer_numbers(a) -> None:
    """Zero or nonsense ``TrainingArguments`` numbers that the Trainer would accept and then misuse (an untrained
    model saved for ``num_train_epochs=0``, a division by zero for ``gradient_accumulation_steps=0``, one step for
    ``max_steps=0``)."""
    checks = [
        (a.per_device_train_batch_size >= 1, "per_device_train_batch_size (--batch-size)",
         a.per_device_train_batch_size, "must be >= 1"),
        (a.per_device_eval_batch_size >= 1, "per_device_eval_batch_size", a.per_device_eval_batch_size, "must be >= 1"),
        (a.gradient_accumulation_steps >= 1, "gradient_accumulation_steps (--grad-accum)",
         a.gradient_accumulation_steps, "must be >= 1; 1 means no accumulation"),
        (a.max_steps == -1 or a.max_steps >= 1, "max_steps (--max-steps)", a.max_steps,
         "must be >= 1, or -1 to train for num_train_epochs"),
        (a.max_steps >= 1 or (a.num_train_epochs == a.num_train_epochs and a.num_train_epochs > 0),
         "num_train_epochs (--epochs)", a.num_train_epochs, "must be > 0 (or set max_steps >= 1)"),
        (a.learning_rate == a.learning_rate and 0 <= a.learning_rate < float("inf"), "learning_rate (--lr)",
         a.learning_rate, "must be a finite number >= 0"),
        (a.save_strategy != "steps" or a.save_steps > 0, "save_steps (--save-steps)", a.save_steps,
         "must be > 0 with save_strategy='steps' (use save_strategy='no' to never save)"),
        (a.logging_steps > 0, "logging_steps", a.logging_steps, "must be > 0"),
        (a.eval_strategy != "steps" or a.eval_steps is None or a.eval_steps > 0, "eval_steps", a.eval_steps,
         "must be > 0 with eval_strategy='steps'"),
        (a.save_total_limit is None or a.save_total_limit >= 1, "save_total_limit", a.save_total_limit,
         "must be >= 1 (or unset to keep every checkpoint)"),
        (0 <= a.seed < 2**32, "seed", a.seed, "must be in [0, 2**32)"),
    ]
    for ok, name, value, rule in checks:
        if not ok:
            raise ValueError(f"{name} {rule}, got {value}")


class _GuardCallback(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.trainer._guard_before_optimizer_step(model)


class NumericalGuardMixin:
    """Put before ``transformers.Trainer`` in the bases; the trainer's ``compute_loss`` ends with
    ``return self.check_finite(loss, terms, magnitudes)`` (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.nonfinite_skipped = 0
        self._guard_in_step = False
        self._guard_checked = False
        self._guard_pos = (-1, -1)  # (global_step, micro-batch index within the optimizer step)
        self._guard_good = 0  # micro-batches of the current optimizer step that were not dropped
        self._guard_drop_step = False
        self._guard_restored = False
        self._guard_capture = None  # set while diagnosing: terms are captured, nothing is acted on
        self._nll_sum, self._nll_since = 0.0, 0  # the plain NLL of the steps since the last log (see log())
        self.add_callback(_GuardCallback(self))
        from seqlevel.trainers.console import quiet_console

        quiet_console(self)  # short console lines, no tables: everything still reaches report_to and log_history

    # ----- configuration ------------------------------------------------------------------------------------
    @property
    def _policy(self) -> str:
        return getattr(self.args, "nonfinite_policy", "stop")

    def _magnitude_limit(self, model) -> float:
        limit = getattr(self.args, "magnitude_limit", None)
        if limit is not None:
            return float(limit)
        if self.args.fp16:
            dtype = torch.float16
        elif self.args.bf16:
            dtype = torch.bfloat16
        else:
            dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        return torch.finfo(dtype).max / 16

    def _where(self) -> str:
        step, i = self._guard_pos
        return (f"optimizer step {step + 1} (global_step {step}), micro-batch {i} of that step, "
                f"epoch {self.state.epoch or 0.0:.3f}")

    # ----- the check every compute_loss ends with -----------------------------------------------------------
    def check_finite(self, loss: torch.Tensor, terms: dict | None = None, magnitudes: dict | None = None,
                     nll: torch.Tensor | None = None):
        """Check ``loss``, each of ``terms`` (name → scalar tensor) and ``max |x|`` of each of ``magnitudes``
        (name → tensor); returns ``loss`` or, under ``"skip"``, a zero stand-in. ``nll``: the plain NLL of the
        micro-batch when no term is it (MixCE family), only logged. Outside a training step (by-hand
        calls, evaluation) it returns ``loss`` unchanged."""
        terms = {k: v for k, v in (terms or {}).items() if torch.is_tensor(v)}
        if self._guard_capture is not None:
            self._guard_capture.update(terms)
            return loss
        if not self._guard_in_step:
            return loss
        self._guard_checked = True
        names = ["total loss"] + list(terms)
        vals = [loss.detach().float().reshape(())] + [t.detach().float().reshape(()) for t in terms.values()]
        mags = {k: v for k, v in (magnitudes or {}).items() if torch.is_tensor(v) and v.numel()}
        vals += [v.detach().abs().amax().float() for v in mags.values()]
        if nll is not None:
            vals.append(nll.detach().float().reshape(()))
        host = torch.stack(vals).tolist()  # one device sync for every check
        n = len(names)
        at = len(host) - 1 if nll is not None else next((names.index(k) for k in NLL_TERMS if k in names), None)
        if at is not None:
            self._nll_sum += host[at]
        bad_terms = [f"{k} = {v}" for k, v in zip(names[1:], host[1:n]) if not _finite(v)]
        problem = None
        if not _finite(host[0]) or bad_terms:
            which = ", ".join(bad_terms) if bad_terms else f"total loss = {host[0]} (every named term is finite)"
            problem = f"non-finite loss at {self._where()}: term {which}"
        else:
            limit = self._magnitude_limit(self.model)
            over = [f"max |{k}| = {v:.4g}" for k, v in zip(mags, host[n:]) if not _finite(v) or v > limit]
            if over:
                problem = (f"blow-up at {self._where()}: {', '.join(over)} exceeds magnitude_limit={limit:.4g} "
                           f"(training dtype limit / 16 unless set)")
        if problem is None:
            self._guard_good += 1
            return loss
        return self._act(problem, "lower the learning rate, enable max_grad_norm, use bf16 instead of fp16, or "
                                  "set nonfinite_policy='skip' to drop such batches", zero=True)

    def _act(self, problem: str, fix: str, zero: bool):
        if self._policy == "stop":
            raise NonFiniteError(f"{problem}; {fix}")
        self.nonfinite_skipped += 1
        logger.warning("%s; skipped (nonfinite_skipped=%d)", problem, self.nonfinite_skipped)
        if zero:
            params = [p for p in self.model.parameters() if p.requires_grad]
            # 0·p has gradient 0 whatever p holds: this micro-batch adds nothing, and every parameter gets a grad.
            return torch.stack([(p.reshape(-1)[:1] * 0.0).sum() for p in params]).sum()
        self._guard_drop_step = True
        return None

    # ----- training step -----------------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self._guard_restored:  # the cumulative count survives a resume through the log history
            self._guard_restored = True
            past = [h["nonfinite_skipped"] for h in self.state.log_history if "nonfinite_skipped" in h]
            self.nonfinite_skipped = int(past[-1]) if past else 0
            self._nll_since = self.state.global_step  # a resumed run logs the NLL of its own steps
        step = self.state.global_step
        if self._guard_pos[0] != step:
            self._guard_pos, self._guard_good, self._guard_drop_step = (step, 0), 0, False
        else:
            self._guard_pos = (step, self._guard_pos[1] + 1)
        self._guard_in_step, self._guard_checked = True, False
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
        finally:
            self._guard_in_step = False
        if not self._guard_checked and not torch.isfinite(loss).all():  # a compute_loss without check_finite
            self._act(f"non-finite loss at {self._where()}: total loss = {loss.item()} (the trainer's compute_loss "
                      "does not name its terms)", "lower the learning rate or enable max_grad_norm", zero=False)
        elif not self._guard_checked:
            self._guard_good += 1
        if getattr(self.args, "nonfinite_check_grads", True) and self.accelerator.scaler is None \
                and not self._guard_drop_step:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            if grads and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
                self._act(self._diagnose(model, inputs, num_items_in_batch),
                          "lower the learning rate, enable max_grad_norm, or set nonfinite_policy='skip'", zero=False)
        return loss

    def _diagnose(self, model, inputs, num_items_in_batch) -> str:
        """Recompute the micro-batch (RNG forked, so training randomness is untouched) and take each term's
        gradient alone, to name the term whose gradient is non-finite and the first parameter it reaches."""
        named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
        first = next((n for n, p in named if not torch.isfinite(p.grad).all()), "?")
        culprits = []
        self._guard_capture = {}
        try:
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices), self.compute_loss_context_manager():
                total = self.compute_loss(model, self._prepare_inputs(inputs), num_items_in_batch=num_items_in_batch)
                terms = dict(self._guard_capture) or {"total loss": total}
                params = [p for _, p in named]
                for k, t in terms.items():
                    if not t.requires_grad:
                        continue
                    gs = torch.autograd.grad(t, params, retain_graph=True, allow_unused=True)
                    if any(g is not None and not torch.isfinite(g).all() for g in gs):
                        culprits.append(k)
        finally:
            self._guard_capture = None
        which = ", ".join(culprits) if culprits else "none alone (they overflow only when summed, or the " \
                                                     "gradients were already non-finite)"
        return (f"non-finite gradient at {self._where()}: first in parameter {first!r}; term(s) with a "
                f"non-finite gradient: {which}")

    def _guard_before_optimizer_step(self, model) -> None:
        if self._guard_good == 0 and not self._guard_drop_step and self._guard_pos[1] >= 0 \
                and self._policy == "skip":
            self._guard_drop_step = True  # every micro-batch of the step was dropped
        if self._guard_drop_step and self.accelerator.scaler is None:
            model.zero_grad(set_to_none=True)  # the optimizer skips parameters without a gradient
        self._guard_pos, self._guard_good, self._guard_drop_step = (-1, -1), 0, False

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._policy == "skip":
            logs["nonfinite_skipped"] = self.nonfinite_skipped
        steps = self.state.global_step - self._nll_since
        if "loss" in logs and steps > 0 and self._nll_sum:
            logs["nll"] = round(self._nll_sum / steps, 4)  # per optimizer step, like the Trainer's 'loss'
            self._nll_sum, self._nll_since = 0.0, self.state.global_step
        super().log(logs, *args, **kwargs)


def _finite(v: float) -> bool:
    return v == v and v not in (float("inf"), float("-inf"))
