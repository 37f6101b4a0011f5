"""Running ``seqlevel train`` safely: the output directory, its lock, signals, a full disk, and the results file.

* a non-empty ``--output-dir`` is refused unless ``--resume`` or ``--overwrite-output-dir`` is given;
* ``.seqlevel.lock`` (an ``flock``, released by the kernel if the process dies) refuses a second concurrent run into
  the same directory;
* Ctrl-C or SIGTERM prints the last complete checkpoint and the exact command that resumes from it (no traceback);
* a full disk prints "no space left on device" and the last complete checkpoint;
* a directory this run created and left empty is removed again, so a failed start leaves nothing behind;
* ``train_results.json`` (the Trainer's metrics) is written beside the model and printed with ``--json``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shlex
import signal
import sys
import tempfile
import threading

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the emptiness check still applies
    fcntl = None

from seqlevel.io import make_readable

LOCK = ".seqlevel.lock"
_DISK_FULL = ("No space left on device", "enforce fail", "file write failed", "unexpected pos")


def check_output_dir(out: str, script) -> None:
    """Refuse a file, a non-empty directory without ``--resume``/``--overwrite-output-dir``, or an unwritable place."""
    if os.path.isfile(out):
        raise ValueError(f"--output-dir {out!r} is a file; pass a directory path (it is created if missing)")
    if script.resume and script.overwrite_output_dir:
        raise ValueError("--resume continues the run in --output-dir and --overwrite-output-dir replaces it; pass one")
    if os.path.isdir(out):
        entries = sorted(n for n in os.listdir(out) if n != LOCK)
        if entries and not (script.resume or script.overwrite_output_dir):
            shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
            raise ValueError(f"--output-dir {out!r} is not empty (it holds {shown}); pass --resume to continue the "
                             "run saved there, --overwrite-output-dir to train over it, or a new directory")
    elif script.resume:
        raise ValueError(f"--resume given but --output-dir {out!r} does not exist, so there is no checkpoint to "
                         "resume from; train without --resume to start")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"cannot write to --output-dir {out!r}: {parent!r} is a file, not a directory")
    try:  # a real probe: os.access says yes to root on a read-only file system
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ValueError(f"cannot write to --output-dir {out!r}: {parent!r} is not writable ({e.strerror}: read-only "
                         "file system or no permission); choose a writable directory") from e


@contextlib.contextmanager
def output_lock(out: str, created: bool):
    """Create ``out`` and hold ``out/.seqlevel.lock``; on exit release it and remove ``out`` if this run created it
    (``created``) and left it empty."""
    try:
        os.makedirs(out, exist_ok=True)
        fd = os.open(os.path.join(out, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ValueError(f"cannot write to --output-dir {out!r}: {e.strerror}; choose a writable directory") from e
    acquired = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
                raise ValueError(f"another seqlevel train (pid {pid}) is writing to --output-dir {out!r}; wait for "
                                 "it to finish, stop it, or pass another --output-dir") from e
        acquired = True
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        if acquired:  # never remove the lock of the run that holds it
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(out, LOCK))
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only succeeds when empty: a failed start leaves nothing behind


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C does), so both end with the resume hint."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _resume_command(argv: list[str] | None) -> str:
    argv = list(argv if argv is not None else sys.argv[1:])
    argv = [a for a in argv if a not in ("--overwrite-output-dir", "--overwrite_output_dir")]
    if "--resume" not in argv:
        argv.append("--resume")
    return "seqlevel " + shlex.join(argv)


def _last_checkpoint(out: str) -> str | None:
    from seqlevel.trainers.checkpointing import last_complete_checkpoint

    return last_complete_checkpoint(out)


def _remove_old_checkpoints(out: str) -> None:
    """--overwrite-output-dir: the previous run's checkpoints go, so a later --resume cannot pick one of them."""
    import shutil

    from seqlevel.trainers.checkpointing import checkpoints

    old = checkpoints(out)
    for ckpt in old:
        shutil.rmtree(ckpt)
    if old:
        print(f"  note: --overwrite-output-dir removed {len(old)} checkpoint(s) of the previous run in {out}",
              file=sys.stderr)


def _describe(cfg, script, notes: list[str], resume_from: str | None = None) -> str:
    lines = [f"seqlevel train: --objective {script.objective} ({type(cfg).__name__}), model {script.model}, "
             f"dataset {script.dataset}",
             f"  learning_rate {cfg.learning_rate:g}, batch {cfg.per_device_train_batch_size} x grad-accum "
             f"{cfg.gradient_accumulation_steps}, "
             + (f"max_steps {cfg.max_steps}" if cfg.max_steps > 0 else f"epochs {cfg.num_train_epochs:g}")
             + f", max_length {cfg.max_length}, output {cfg.output_dir}"]
    if script.use_peft:
        targets = " ".join(script.lora_target_modules)
        lines.append(f"  LoRA on: rank {script.lora_r}, alpha {script.lora_alpha}, dropout {script.lora_dropout:g}, "
                     f"modules {targets}; the merged model is saved")
    if resume_from is not None:
        lines.append(f"  resuming from {resume_from}")
    lines += [f"  note: {n}" for n in notes]
    if script.objective != "mle":
        what = {"sequencematch": "the behaviour-cloning NLL of the (noise-augmented) data actions",
                "cat": "the LM's plain per-token NLL"}.get(script.objective, "the plain per-token NLL")
        lines.append(f"  logged 'loss' is the {script.objective} objective; 'nll' is {what} (compare runs across "
                     "objectives on 'nll')")
    return "\n".join(lines)


def _save(trainer, script, out: str) -> None:
    if script.use_peft:  # save the merged model, so every command (and from_pretrained) loads it
        model = trainer.accelerator.unwrap_model(trainer.model)
        if script.objective == "cat":
            model.base = model.base.merge_and_unload()
        else:
            trainer.model = model.merge_and_unload()
    trainer.save_model(out)


def execute(script, cfg, trainer, notes: list[str], argv: list[str] | None, created: bool) -> int:
    """Train under the output lock, save the model and ``train_results.json``; returns the exit status."""
    out = cfg.output_dir
    resume_from = _last_checkpoint(out) if script.resume else None
    print(_describe(cfg, script, notes, resume_from), file=sys.stderr)
    with output_lock(out, created), _sigterm_as_interrupt():
        if script.overwrite_output_dir:
            _remove_old_checkpoints(out)
        try:
            # the checkpoint the header names (None with --resume: the trainer says there is no complete one)
            result = trainer.train(resume_from_checkpoint=(resume_from or True) if script.resume else None)
            _save(trainer, script, out)
            metrics = dict(result.metrics)
            trainer.save_metrics("train", metrics)  # train_results.json + all_results.json, as Trainer scripts do
            make_readable(out)
        except KeyboardInterrupt:
            ckpt = _last_checkpoint(out)
            where = (f"the last complete checkpoint is {ckpt}" if ckpt else
                     "no checkpoint was saved yet (lower --save-steps to save earlier)")
            print(f"\nseqlevel train: interrupted at step {trainer.state.global_step}; {where}.", file=sys.stderr)
            if ckpt:
                print(f"resume with: {_resume_command(argv)}", file=sys.stderr)
            return 130
        except (OSError, RuntimeError) as e:
            full = getattr(e, "errno", None) == errno.ENOSPC or any(s in str(e) for s in _DISK_FULL)
            if not full:
                raise
            ckpt = _last_checkpoint(out)
            print(f"seqlevel train: error: no space left on device while writing to {out!r}; the last complete "
                  f"checkpoint is {ckpt or 'none (nothing was saved)'}. Free some space"
                  + (f", then resume with: {_resume_command(argv)}" if ckpt else " and start again"), file=sys.stderr)
            return 1
    if script.json:
        print(json.dumps(metrics))
    else:
        print(f"saved model and tokenizer to {out}; train_results.json: {json.dumps(metrics)}")
    return 0
