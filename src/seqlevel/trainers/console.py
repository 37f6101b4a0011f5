"""A quiet console for our trainers: short log lines, no tables, one save bar.

``transformers`` prints every ``Trainer.log`` dict on the console (``ProgressCallback``, or ``PrinterCallback``
with ``disable_tqdm``). Ours carry 20+ SequenceMatch diagnostics and Markdown tables (rollouts, credit maps) that
the console can only show as ``[String too long to display ...]``. :func:`quiet_console` swaps those two callbacks
for ones that print at most :data:`CONSOLE_KEYS` numbers per line (the loss and its companions first) and no
tables. Nothing is dropped elsewhere: the ``report_to`` backends, ``trainer_state.json``'s ``log_history`` and the
JSON results get every key, tables included.

:func:`no_save_bars` silences ``transformers``' "Writing model shards" bar around checkpoint saves, so a run shows
one save bar (its final model), not one per checkpoint interleaved with the training bar.
"""

from __future__ import annotations

import contextlib

from transformers import PrinterCallback, ProgressCallback

CONSOLE_KEYS = 8  # numbers per console log line; the rest go to the logs and JSON only
FIRST = ("loss", "nll", "eval_loss", "eval_nll", "grad_norm", "learning_rate")  # shown before any other key


def console_logs(logs: dict, max_keys: int = CONSOLE_KEYS) -> dict:
    """The part of ``logs`` worth a console line: numbers only (no tables), :data:`FIRST` keys first, at most
    ``max_keys`` of them plus ``epoch``; ``{}`` when nothing but ``epoch`` is left."""
    numbers = {k: v for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)
               and k not in ("total_flos", "epoch")}
    order = [k for k in FIRST if k in numbers] + [k for k in numbers if k not in FIRST]
    if not order:
        return {}
    out = {k: numbers[k] for k in order[:max_keys]}
    if "epoch" in logs:
        out["epoch"] = logs["epoch"]
    return out


class _QuietLogs:
    """Mixin for a console callback: ``on_log`` passes on only :func:`console_logs` of the logs (nothing when
    none is left)."""

    max_keys = CONSOLE_KEYS

    def on_log(self, args, state, control, logs=None, **kwargs):
        shown = console_logs(logs or {}, self.max_keys)
        if shown:
            super().on_log(args, state, control, logs=shown, **kwargs)


class QuietProgressCallback(_QuietLogs, ProgressCallback):
    """``ProgressCallback`` whose log lines are :func:`console_logs` of the logs."""

    def __init__(self, max_keys: int = CONSOLE_KEYS, **kwargs):
        super().__init__(**kwargs)
        self.max_keys = max_keys


class QuietPrinterCallback(_QuietLogs, PrinterCallback):
    """``PrinterCallback`` (``disable_tqdm=True``) whose lines are :func:`console_logs` of the logs."""

    def __init__(self, max_keys: int = CONSOLE_KEYS):
        super().__init__()
        self.max_keys = max_keys


def quiet_console(trainer, max_keys: int = CONSOLE_KEYS) -> None:
    """Replace ``trainer``'s console callbacks (in place, same position) with the quiet ones."""
    cbs = trainer.callback_handler.callbacks
    for i, cb in enumerate(cbs):
        if type(cb) is ProgressCallback:
            cbs[i] = QuietProgressCallback(max_keys, max_str_len=cb.max_str_len)
        elif type(cb) is PrinterCallback:
            cbs[i] = QuietPrinterCallback(max_keys)


@contextlib.contextmanager
def no_save_bars():
    """Silence ``transformers``' progress bars (the "Writing model shards" bar) inside the block."""
    from transformers.utils import logging

    was = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            logging.enable_progress_bar()
