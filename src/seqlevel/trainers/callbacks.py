"""What the model generates, in the training logs: ``transformers.TrainerCallback``s for our trainers.

* :class:`RolloutTableCallback` — at each :class:`~seqlevel.trainers.SequenceMatchTrainer` buffer refresh, a small
  table of rollouts: the prompt, the action sequence with ``<bksp>`` drawn as ``⌫``, the final text and the
  rollout's backspace count (plus the refresh's mean backspace count as a scalar).
* :class:`CreditMapCallback` — every ``logging_steps`` of an :class:`~seqlevel.trainers.AttributeTrainer`, the
  per-token credit ``c_t = P(a | x≤t) − E_t`` of one fixed example (notes §2.2), as a table.

Both log through ``Trainer.log``, the trainers' normal logging, so every ``report_to`` backend gets them as
``transformers`` hands them on: the tables are Markdown strings, which the TensorBoard callback writes as text
(``add_text``; TensorBoard renders the table) and W&B, trackio and SwanLab log as given; the scalar goes to every
backend. Backends that accept only numbers (MLflow, ClearML, Neptune, DVCLive, Comet, AzureML) drop the table with
``transformers``' own warning. ``trainer_state.json``'s ``log_history`` keeps the tables too.

Like TRL's ``LogCompletionsCallback``, a callback holds the trainer it logs through. The trainers attach a default
one at the end of ``__init__`` (:func:`attach`); pass your own in ``callbacks=[...]`` to change the settings, or
``trainer.remove_callback(RolloutTableCallback)`` to turn it off.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from seqlevel.attributes.estimate import trace

BACKSPACE_GLYPH = "⌫"


def _cell(text: str) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened, empty shown as a dash."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ⏎ ")
    return text if text.strip() else "–"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """``header`` and ``rows`` as a GitHub-style Markdown table (cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(str(c)) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_actions(tokenizer, actions: list[int], backspace_id: int | None) -> str:
    """The action sequence as text, each ``<bksp>`` drawn as ``⌫`` (runs of tokens decoded together).

    Example: actions ``1 2 + 5 <bksp> 3`` of a character tokenizer render as ``12+5⌫3``.
    """
    out, run = [], []
    for a in actions:
        if backspace_id is not None and a == backspace_id:
            out.append(tokenizer.decode(run, skip_special_tokens=True) if run else "")
            out.append(BACKSPACE_GLYPH)
            run = []
        else:
            run.append(int(a))
    if run:
        out.append(tokenizer.decode(run, skip_special_tokens=True))
    return "".join(out)


class _TrainerBound(TrainerCallback):
    """A callback that logs through its trainer's ``log`` (set by :func:`attach`, or given)."""

    def __init__(self, trainer=None):
        self.trainer = trainer

    def _adopt(self, default) -> None:
        """Take what the user left unset from the trainer's default (see :func:`attach`)."""


class RolloutTableCallback(_TrainerBound):
    """Logs a table of rollouts at each SequenceMatch replay-buffer refresh.

    Args:
        trainer: the :class:`~seqlevel.trainers.SequenceMatchTrainer` (set automatically when the callback is
            passed in its ``callbacks``).
        num_rows: rollouts shown per refresh (the first ones of the refresh).
        key: log key of the table; ``f"{key}/backspaces_mean"`` holds the refresh's mean backspace count.
    """

    def __init__(self, trainer=None, num_rows: int = 4, key: str = "rollouts"):
        super().__init__(trainer)
        if num_rows < 1:
            raise ValueError(f"num_rows must be >= 1, got {num_rows}; it is the number of rollouts per table")
        self.num_rows, self.key = num_rows, key

    def table(self, tokenizer, output, backspace_id: int | None) -> str:
        """The Markdown table of ``output`` (a :class:`seqlevel.decoding.GenerateOutput`)."""
        rows = []
        for prompt, actions, seq, n_bk in list(zip(output.prompts, output.actions, output.sequences,
                                                   output.num_backspaces.tolist()))[: self.num_rows]:
            rows.append([tokenizer.decode(prompt, skip_special_tokens=True),
                         render_actions(tokenizer, actions, backspace_id),
                         tokenizer.decode(seq, skip_special_tokens=True), int(n_bk)])
        return markdown_table(["prompt", f"actions ({BACKSPACE_GLYPH} = <bksp>)", "final text", "backspaces"], rows)

    def on_rollouts(self, args, state, control, *, output, backspace_id: int | None, **kwargs) -> None:
        """Called by the trainer after each refresh with the decoder's output."""
        if self.trainer is None:
            return
        logs = {self.key: self.table(self.trainer.processing_class, output, backspace_id)}
        if len(output.actions):
            logs[f"{self.key}/backspaces_mean"] = float(output.num_backspaces.float().mean())
        self.trainer.log(logs)


class CreditMapCallback(_TrainerBound):
    """Logs, every ``logging_steps``, the per-token credit of one fixed example under the CAT model being trained.

    Args:
        trainer: the :class:`~seqlevel.trainers.AttributeTrainer` (set automatically when passed in
            ``callbacks``).
        input_ids: the example's token ids; default (set by :func:`attach`): the first ``eval_dataset`` row, or
            the first ``train_dataset`` row when there is no eval set (then it is not held out).
        target: the class whose credit is shown; default the example's own label (``label``), else 1 for binary,
            the last class for categorical, the mean for numeric.
        label: the example's attribute label (for the default target and the table's title).
        key: log key of the table.
    """

    def __init__(self, trainer=None, input_ids: list[int] | None = None, target: int | None = None,
                 label=None, key: str = "credit_map", source: str = "example"):
        super().__init__(trainer)
        if input_ids is not None and len(input_ids) < 2:
            raise ValueError(f"the credit-map example needs at least 2 tokens, got {len(input_ids)}")
        self.input_ids, self.target, self.label, self.key, self.source = input_ids, target, label, key, source

    def _adopt(self, default) -> None:
        if self.input_ids is None and isinstance(default, CreditMapCallback):  # user gave settings, not the example
            self.input_ids, self.label, self.source = default.input_ids, default.label, default.source

    def _target(self, model) -> int:
        if self.target is not None:
            return self.target
        if model.kind != "numeric" and self.label is not None:
            return int(self.label)
        return {"binary": 1, "categorical": model.head.config.num_classes - 1, "numeric": 0}[model.kind]

    @torch.no_grad()
    def table(self, model, tokenizer) -> str:
        """The credit map of the example under ``model`` (an :class:`~seqlevel.attributes.AttributeModel`)."""
        target = self._target(model)
        was_training = model.training
        model.eval()
        try:
            ids = torch.tensor([self.input_ids], device=next(model.parameters()).device)
            tr = trace(model, ids)
        finally:
            model.train(was_training)
        est, credit = tr.estimate[0, :, target].tolist(), tr.credit[0, :, target].tolist()
        def name_of(i: int) -> str:  # no tokenizer (e.g. pre-tokenized data): the id itself
            return str(i) if tokenizer is None else tokenizer.decode([i], skip_special_tokens=False).replace(" ", "␣")

        rows = [[t, name_of(tok_id), "–" if t == 0 else f"{est[t]:.3f}", "–" if t == 0 else f"{credit[t]:+.3f}"]
                for t, tok_id in enumerate(self.input_ids)]
        name = "mean" if model.kind == "numeric" else f"a={target}"
        title = f"credit toward {name} on the {self.source}" + (f" (label {self.label})" if self.label is not None
                                                               else "")
        return title + "\n\n" + markdown_table(["t", "token", f"P({name} | x≤t)", "credit c_t"], rows)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """After each training log (every ``logging_steps``: the logs that carry ``loss``), log the credit map.

        It is logged from ``on_log`` rather than ``on_step_end``: a ``Trainer.log`` call resets
        ``control.should_log``, so logging before the Trainer's own step log would swallow the loss.
        """
        if self.trainer is None or self.input_ids is None or not logs or "loss" not in logs:
            return  # every rank runs it (FSDP forwards are collective); the backends log on rank 0 only
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        self.trainer.log({self.key: self.table(model, self.trainer.processing_class)})


def attach(trainer, default: _TrainerBound | None) -> None:
    """The trainers' hook (end of ``__init__``): bind our callbacks given in ``callbacks=[...]`` to ``trainer`` and
    add ``default`` unless one of its class is already there."""
    present = False
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, _TrainerBound):
            cb.trainer = cb.trainer or trainer
            if default is not None and isinstance(cb, type(default)):
                cb._adopt(default)
                present = True
    if default is not None and not present:
        default.trainer = trainer
        trainer.add_callback(default)


def notify_rollouts(trainer, output, backspace_id: int | None) -> None:
    """Hand a refresh's :class:`~seqlevel.decoding.GenerateOutput` to the callbacks that want it (``on_rollouts``)."""
    for cb in trainer.callback_handler.callbacks:
        hook = getattr(cb, "on_rollouts", None)
        if hook is not None:
            hook(trainer.args, trainer.state, trainer.control, output=output, backspace_id=backspace_id)


def credit_example(trainer) -> CreditMapCallback | None:
    """The default credit-map callback of an :class:`~seqlevel.trainers.AttributeTrainer`: its first eval example
    (held out), else its first training example; ``None`` without data."""
    for ds, source in ((trainer.eval_dataset, "held-out example (eval_dataset[0])"),
                       (trainer.train_dataset, "first training example (no eval_dataset given)")):
        if isinstance(ds, dict):  # several eval sets: take the first
            ds = next(iter(ds.values()), None)
        if ds is not None and len(ds) > 0 and "input_ids" in ds.column_names and len(ds[0]["input_ids"]) >= 2:
            row = ds[0]
            return CreditMapCallback(input_ids=list(row["input_ids"]), label=row.get("attribute"), source=source)
    return None
