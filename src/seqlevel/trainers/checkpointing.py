"""Checkpoints that are complete or ignored: a manifest written last, atomically, marks a checkpoint as whole.

``transformers.Trainer`` writes ``checkpoint-N/`` file by file (weights, optimizer, scheduler, RNG, trainer
state, and for SequenceMatch the replay buffer), so a run killed while saving leaves a directory that
``get_last_checkpoint`` would pick and that may load as valid but be half-written. :class:`SafeCheckpointMixin`
adds ``seqlevel_checkpoint.json`` (every file's name and size, optionally its sha256) after all of them, with a
temporary-name-then-rename write; on resume

* ``resume_from_checkpoint=True`` takes the newest checkpoint whose manifest verifies, warning about the
  newer, incomplete ones it skips;
* an explicit path must verify, else a ``ValueError`` names the directory and the file that is missing,
  truncated, altered or unreadable.

The manifest also records the arguments an exact resume must repeat (seeds, batch layout, world size); a resume
with other values is refused with the differences listed (a warning under ``ignore_data_skip=True``).

Older checkpoints are rotated (``save_total_limit``) only after the new manifest is written, so a kill during
saving always leaves the previous complete checkpoint in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import re

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from seqlevel.io import atomic_write_json, make_readable

MANIFEST = "seqlevel_checkpoint.json"
# Arguments that fix which batches each optimizer step sees and which random numbers it draws.
RESUME_CONTRACT = ("seed", "data_seed", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size",
                   "dataloader_drop_last")
_CKPT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
logger = logging.getLogger(__name__)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(checkpoint_dir: str, checksums: bool = False, resume_contract: dict | None = None) -> dict:
    """Write ``seqlevel_checkpoint.json`` listing every file under ``checkpoint_dir`` (relative path → size, and
    sha256 when ``checksums``); returns the manifest. Call it after every file of the checkpoint is written.
    ``resume_contract``: the arguments a resume must repeat to be exact (see :data:`RESUME_CONTRACT`)."""
    files = {}
    for root, _, names in os.walk(checkpoint_dir):
        for n in sorted(names):
            if n == MANIFEST or n.startswith(".tmp-"):
                continue
            p = os.path.join(root, n)
            rel = os.path.relpath(p, checkpoint_dir)
            entry = {"size": os.path.getsize(p)}
            if checksums:
                entry["sha256"] = _sha256(p)
            files[rel] = entry
    manifest = {"format": 1, "files": dict(sorted(files.items()))}
    if resume_contract is not None:
        manifest["resume_contract"] = resume_contract
    atomic_write_json(os.path.join(checkpoint_dir, MANIFEST), manifest)
    return manifest


def verify_checkpoint(checkpoint_dir: str) -> None:
    """Check that ``checkpoint_dir`` is a complete seqlevel checkpoint.

    Every file in the manifest must exist with its recorded size (and sha256 when recorded), and every
    ``.safetensors`` file must have a readable header.

    Raises:
        ValueError: naming the checkpoint and the offending file, with what to do instead.
    """
    if not os.path.isdir(checkpoint_dir):
        raise ValueError(f"checkpoint {checkpoint_dir!r} is not a directory; pass a 'checkpoint-N' directory "
                         "written by a seqlevel trainer, or resume_from_checkpoint=True for the last complete one")
    path = os.path.join(checkpoint_dir, MANIFEST)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {checkpoint_dir!r} is incomplete: {MANIFEST} is missing, so the run was "
                         "killed while saving it (or it was not written by a seqlevel trainer); resume from an "
                         "earlier checkpoint, or pass resume_from_checkpoint=True to take the last complete one "
                         "(a checkpoint you trust, e.g. from plain transformers, can be adopted with "
                         "seqlevel.trainers.checkpointing.write_manifest(path))")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        files = manifest["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {checkpoint_dir!r} has a corrupted manifest {path!r} ({e}); resume from an "
                         "earlier checkpoint") from e
    for rel, entry in files.items():
        p = os.path.join(checkpoint_dir, rel)
        if not os.path.isfile(p):
            raise ValueError(f"checkpoint {checkpoint_dir!r} is corrupted: file {p!r} listed in its manifest is "
                             "missing; resume from an earlier checkpoint")
        size = os.path.getsize(p)
        if size != entry["size"]:
            raise ValueError(f"checkpoint {checkpoint_dir!r} is corrupted: file {p!r} has {size} bytes but was "
                             f"saved with {entry['size']} (truncated or overwritten); resume from an earlier "
                             "checkpoint")
        if "sha256" in entry and _sha256(p) != entry["sha256"]:
            raise ValueError(f"checkpoint {checkpoint_dir!r} is corrupted: file {p!r} does not match the sha256 "
                             "recorded when it was saved; resume from an earlier checkpoint")
        if p.endswith(".safetensors"):
            _check_safetensors(p, checkpoint_dir)


def _check_safetensors(p: str, checkpoint_dir: str) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(p, framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"checkpoint {checkpoint_dir!r} is corrupted: file {p!r} is not a readable safetensors "
                         f"file ({e}); resume from an earlier checkpoint") from e


def checkpoints(output_dir: str) -> list[str]:
    """The ``checkpoint-N`` directories under ``output_dir``, newest (highest N) first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), n) for n in os.listdir(output_dir)
             if (m := _CKPT_RE.match(n)) and os.path.isdir(os.path.join(output_dir, n))]
    return [os.path.join(output_dir, n) for _, n in sorted(found, reverse=True)]


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint under ``output_dir`` that passes :func:`verify_checkpoint` (``None`` if none);
    newer incomplete or corrupted ones are skipped with a warning that says why."""
    for ckpt in checkpoints(output_dir):
        try:
            verify_checkpoint(ckpt)
        except ValueError as e:
            logger.warning("skipping %s: %s", ckpt, e)
            continue
        return ckpt
    return None


@contextlib.contextmanager
def _naming(checkpoint: str | None, files: str):
    from safetensors import SafetensorError

    try:
        yield
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, SafetensorError) as e:
        raise ValueError(f"checkpoint {checkpoint!r}: could not load {files} ({type(e).__name__}: {e}); the file is "
                         "corrupted or belongs to another model/optimizer setup; resume from an earlier checkpoint, "
                         "and use checkpoint_checksums=True to catch altered files before loading") from e


class SafeCheckpointMixin:
    """Put before ``transformers.Trainer`` in the bases: ``class T(SafeCheckpointMixin, Trainer)``.

    Reads ``args.checkpoint_checksums`` (default False: sizes only) from the config when it has that field.
    """

    def _save_checkpoint(self, model, trial) -> None:
        args = self.args
        limit = args.save_total_limit
        args.save_total_limit = None  # rotate only once the new checkpoint is complete (below)
        from seqlevel.trainers.console import no_save_bars

        try:
            with no_save_bars():  # one save bar per run: the final model's, not one per checkpoint
                super()._save_checkpoint(model, trial)
        finally:
            args.save_total_limit = limit
        run_dir = self._get_output_dir(trial=trial)
        ckpt = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        self.accelerator.wait_for_everyone()  # every rank's RNG file is on disk before the manifest lists them
        if args.should_save:
            make_readable(ckpt)  # 0644 like every other output (some writers create 0600 files)
            write_manifest(ckpt, checksums=bool(getattr(args, "checkpoint_checksums", False)),
                           resume_contract={k: getattr(args, k, None) for k in RESUME_CONTRACT})
            rotate_checkpoints(output_dir=run_dir, save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    # Loading: a file that passed the manifest (sizes only, unless checksums) can still be altered in place; the
    # raw torch/safetensors error does not say which file, so name the files each phase reads.
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        with _naming(resume_from_checkpoint, "the model weights (model.safetensors, or the adapter / head files)"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model=model)

    def _issue_warnings_after_load(self, load_result) -> None:
        """Drop tied weights (GPT-2's ``lm_head.weight`` = the input embedding, saved once under the other name)
        from the missing keys before the Trainer warns about them: on resume they are present, through the tie."""
        model = self.accelerator.unwrap_model(self.model)
        by_storage: dict[int, list[str]] = {}
        for k, v in model.state_dict().items():
            by_storage.setdefault(v.data_ptr(), []).append(k)
        missing = set(load_result.missing_keys)
        tied = {k for ks in by_storage.values() if len(ks) > 1 and not set(ks) <= missing for k in ks}
        kept = [k for k in load_result.missing_keys if k not in tied]
        if len(kept) != len(load_result.missing_keys) and hasattr(model, "tie_weights"):
            model.tie_weights()
        return super()._issue_warnings_after_load(load_result._replace(missing_keys=kept))

    def _load_optimizer_and_scheduler(self, checkpoint):
        with _naming(checkpoint, "optimizer.pt / scheduler.pt"):
            return super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint):
        with _naming(checkpoint, "rng_state*.pth"):
            return super()._load_rng_state(checkpoint)

    def resolve_checkpoint(self, resume_from_checkpoint):
        """``True`` → the last complete checkpoint in ``output_dir``; a path → that path once it verifies."""
        if resume_from_checkpoint is True:
            ckpt = last_complete_checkpoint(self.args.output_dir)
            if ckpt is None:
                found = checkpoints(self.args.output_dir)
                what = (f"{len(found)} incomplete or corrupted: {[os.path.basename(c) for c in found]}" if found
                        else "no checkpoint-N directory")
                raise ValueError(f"resume_from_checkpoint=True but output_dir {self.args.output_dir!r} holds no "
                                 f"complete checkpoint ({what}); train without resume_from_checkpoint (--resume) "
                                 "to start over")
            self.check_resume_contract(ckpt)
            return ckpt
        if isinstance(resume_from_checkpoint, str | os.PathLike):
            verify_checkpoint(os.fspath(resume_from_checkpoint))
            self.check_resume_contract(os.fspath(resume_from_checkpoint))
            return os.fspath(resume_from_checkpoint)
        return resume_from_checkpoint

    def check_resume_contract(self, checkpoint: str) -> None:
        """Refuse a resume whose batch layout or seeds differ from the saved run's: the Trainer would skip the
        wrong number of batches and draw other random numbers, silently leaving the interrupted run's path.
        ``ignore_data_skip=True`` (the Trainer's own "data order need not match") turns the error into a warning."""
        with open(os.path.join(checkpoint, MANIFEST), encoding="utf-8") as f:
            saved = json.load(f).get("resume_contract") or {}
        diff = {k: (v, getattr(self.args, k, None)) for k, v in saved.items()
                if k in RESUME_CONTRACT and v != getattr(self.args, k, None)}
        if not diff:
            return
        what = ", ".join(f"{k}={a!r} (this run: {b!r})" for k, (a, b) in diff.items())
        msg = (f"checkpoint {checkpoint!r} was saved with {what}; a resume is exact only with the same values: pass "
               "them again, or set ignore_data_skip=True to resume anyway on a different data path")
        if self.args.ignore_data_skip:
            logger.warning(msg)
            return
        raise ValueError(msg)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """``Trainer.train`` resuming only from complete checkpoints (see the module docstring)."""
        return super().train(resume_from_checkpoint=self.resolve_checkpoint(resume_from_checkpoint), trial=trial,
                             **kwargs)
