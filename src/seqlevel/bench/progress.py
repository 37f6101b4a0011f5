"""Progress of a benchmark: one ``tqdm`` bar on stderr over all its work (steps, runs), with an ETA.

A benchmark opens ``with progress.bar("name", total=N, unit="step"):`` once in ``run(cfg)`` and advances it from
anywhere below (``progress.advance(k)``), or hands ``progress.StepCallback()`` to a ``transformers.Trainer`` so
each optimizer step counts. While a bar is open, the Hugging Face libraries' own bars (a checkpoint's "Writing
model shards") are off. With no bar open (or after ``progress.enabled(False)``), both do nothing, so the
same code runs silently in tests and libraries.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys

from transformers import TrainerCallback

_bar: contextvars.ContextVar = contextvars.ContextVar("seqlevel_bench_bar", default=None)
_enabled: contextvars.ContextVar = contextvars.ContextVar("seqlevel_bench_progress", default=True)


@contextlib.contextmanager
def enabled(on: bool):
    """Show (``True``) or hide bars opened inside this block."""
    token = _enabled.set(on)
    try:
        yield
    finally:
        _enabled.reset(token)


@contextlib.contextmanager
def bar(desc: str, total: int, unit: str = "step"):
    """A bar over ``total`` units; a bar already open (a benchmark run inside another's) is reused."""
    outer = _bar.get()
    if outer is not None:  # nested: the outer bar grows by this block's work
        grow(total)
        yield outer
        return
    from tqdm.auto import tqdm

    b = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not _enabled.get(), dynamic_ncols=True,
             mininterval=0.5, leave=True)
    token = _bar.set(b)
    with quiet_libraries():  # one bar per benchmark: no "Writing model shards" or "tokenizing" bars in between
        try:
            yield b
        finally:
            _bar.reset(token)
            b.close()


@contextlib.contextmanager
def quiet_libraries():
    """Turn off the progress bars of ``transformers`` and ``datasets`` inside this block (restored after)."""
    import datasets
    from transformers.utils import logging as hf_logging

    hf_on, ds_on = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hf_on:
            hf_logging.enable_progress_bar()
        if ds_on:
            datasets.enable_progress_bars()


def advance(n: int = 1, note: str | None = None) -> None:
    """Advance the open bar by ``n`` units (and show ``note`` after it); no-op without a bar."""
    b = _bar.get()
    if b is not None:
        if note is not None:
            b.set_postfix_str(note, refresh=False)
        b.update(n)


def grow(n: int) -> None:
    """Add ``n`` units to the open bar's total (work whose size is known only once it starts)."""
    b = _bar.get()
    if b is not None:
        b.total = (b.total or 0) + n
        b.refresh()


def note(text: str) -> None:
    """Show ``text`` after the open bar (what is running now)."""
    b = _bar.get()
    if b is not None:
        b.set_postfix_str(text)


class StepCallback(TrainerCallback):
    """Advances the open bar by one per optimizer step of a ``Trainer``."""

    def on_step_end(self, args, state, control, **kwargs):
        advance(1)
