"""Kill-and-resume: a real subprocess is SIGKILLed between checkpoints (or inside a save), a new one resumes with
``resume_from_checkpoint=True``, and losses and final weights equal an uninterrupted run bitwise (CPU, 1 thread).

The uninterrupted reference runs in this process (same worker code, same thread count) to save one interpreter
start; one module-scoped reference per trainer is shared by the tests that need it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers.trainer_utils import get_last_checkpoint

from seqlevel.trainers.checkpointing import (
    MANIFEST,
    last_complete_checkpoint,
    verify_checkpoint,
    write_manifest,
)

from . import resume_worker

WORKER = os.path.join(os.path.dirname(__file__), "resume_worker.py")
KINDS = ["mixce", "sequencematch", "attribute"]


def _losses(out):
    with open(os.path.join(out, "losses.jsonl")) as f:
        return [json.loads(line) for line in f]


def _spawn(kind, out, *extra):
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, WORKER, kind, str(out), *extra], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(pred, proc, timeout=400.0):
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early (rc={proc.returncode}): {proc.stderr.read()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("worker too slow")
        time.sleep(0.05)


def _run_to_end(kind, out, *extra):
    proc = _spawn(kind, out, *extra)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def _assert_same_run(out, ref):
    got = {r["step"]: r["loss"] for r in _losses(out)}  # a step logged twice (before the kill and after) must agree
    for r in _losses(out):
        assert got[r["step"]] == r["loss"], f"step {r['step']} logged two different losses"
    assert got == {r["step"]: r["loss"] for r in _losses(ref)}, "losses differ from the uninterrupted run"
    w, w_ref = torch.load(os.path.join(out, "final.pt")), torch.load(os.path.join(ref, "final.pt"))
    assert w.keys() == w_ref.keys()
    for k in w:
        assert torch.equal(w[k], w_ref[k]), f"{k} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """kind → directory of an uninterrupted run (6 steps, checkpoints at 2, 4, 6)."""
    cache = {}

    def get(kind):
        if kind not in cache:
            out = tmp_path_factory.mktemp(f"ref-{kind}")
            torch.manual_seed(0)
            resume_worker.main([kind, str(out)])
            cache[kind] = str(out)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_between_checkpoints_then_resume_is_bitwise_identical(tmp_path, reference, kind):
    out = tmp_path / "run"
    proc = _spawn(kind, out, "--slow-after", "4")
    # step 5 logged: checkpoint-4 is complete and step 5 ran; checkpoint-6 is at least 3 s away
    _wait_for(lambda: os.path.exists(out / "losses.jsonl") and any(r["step"] == 5 for r in _losses(out)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "final.pt").exists()
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-4")
    _run_to_end(kind, out, "--resume")
    _assert_same_run(out, reference(kind))
    if kind == "sequencematch":  # the replay buffer came back from the checkpoint (rollouts from step 2)
        with open(out / "checkpoint-4" / "sequencematch_replay.json") as f:
            assert json.load(f)["items"], "checkpoint-4 should carry a non-empty replay buffer"


def test_sigkill_during_save_resume_skips_the_half_written_checkpoint(tmp_path, reference):
    out = tmp_path / "run"
    proc = _spawn("mixce", out, "--hang-in-save", "4")
    _wait_for(lambda: (out / "hanging").exists(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = out / "checkpoint-4"
    assert (half / "model.safetensors").exists() and not (half / MANIFEST).exists()
    assert get_last_checkpoint(str(out)) == str(half)  # what plain transformers would resume from
    with pytest.raises(ValueError, match=rf"checkpoint-4' is incomplete: {MANIFEST} is missing"):
        verify_checkpoint(str(half))
    assert last_complete_checkpoint(str(out)) == str(out / "checkpoint-2")
    _run_to_end("mixce", out, "--resume")  # resumes from checkpoint-2, redoes steps 3..6
    _assert_same_run(out, reference("mixce"))


def _complete_copy(reference, tmp_path, step=4):
    src = os.path.join(reference("mixce"), f"checkpoint-{step}")
    dst = tmp_path / f"checkpoint-{step}"
    shutil.copytree(src, dst)
    return dst


def test_truncated_weights_are_named(tmp_path, reference):
    ckpt = _complete_copy(reference, tmp_path)
    verify_checkpoint(str(ckpt))
    p = ckpt / "model.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.safetensors' has 1000 bytes but was saved with \d+"):
        verify_checkpoint(str(ckpt))


def test_explicit_resume_from_corrupted_checkpoint_names_the_file(tmp_path, reference):
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    out = tmp_path / "out"
    out.mkdir()
    ckpt = _complete_copy(reference, out)
    (ckpt / "optimizer.pt").write_bytes(b"")
    trainer = resume_worker.build("mixce", str(out))
    assert isinstance(trainer.args, MixCEConfig) and isinstance(trainer, MixCETrainer)
    with pytest.raises(ValueError, match=r"optimizer\.pt' has 0 bytes"):
        trainer.train(resume_from_checkpoint=str(ckpt))
    with pytest.raises(ValueError, match=r"holds no complete checkpoint \(1 incomplete or corrupted"):
        trainer.train(resume_from_checkpoint=True)


def test_same_size_corruption_is_caught_with_checksums(tmp_path, reference):
    ckpt = _complete_copy(reference, tmp_path)
    write_manifest(str(ckpt), checksums=True)
    p = ckpt / "optimizer.pt"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"optimizer\.pt' does not match the sha256"):
        verify_checkpoint(str(ckpt))


def test_unreadable_safetensors_and_manifest_are_named(tmp_path, reference):
    ckpt = _complete_copy(reference, tmp_path)
    p = ckpt / "model.safetensors"
    p.write_bytes(b"\xff" * p.stat().st_size)  # same size, garbage header
    with pytest.raises(ValueError, match=r"model\.safetensors' is not a readable safetensors file"):
        verify_checkpoint(str(ckpt))
    (ckpt / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match=rf"corrupted manifest .*{MANIFEST}"):
        verify_checkpoint(str(ckpt))


def test_rotation_keeps_the_last_complete_checkpoint(tmp_path):
    out = tmp_path / "run"
    trainer = resume_worker.build("mixce", str(out))
    trainer.args.save_total_limit = 1
    trainer.train()
    assert sorted(os.listdir(out)) == ["checkpoint-6"]
    verify_checkpoint(str(out / "checkpoint-6"))


def test_same_size_corruption_without_checksums_is_named_at_load(tmp_path, reference):
    out = tmp_path / "out"
    out.mkdir()
    ckpt = _complete_copy(reference, out)
    p = ckpt / "optimizer.pt"
    p.write_bytes(b"\0" * p.stat().st_size)  # passes the size check; torch.load fails on it
    verify_checkpoint(str(ckpt))
    trainer = resume_worker.build("mixce", str(out))
    with pytest.raises(ValueError, match=r"checkpoint-4': could not load optimizer\.pt / scheduler\.pt"):
        trainer.train(resume_from_checkpoint=str(ckpt))


def test_resume_with_another_batch_layout_is_refused(tmp_path, reference):
    out = tmp_path / "out"
    out.mkdir()
    ckpt = _complete_copy(reference, out)
    trainer = resume_worker.build("mixce", str(out))
    trainer.check_resume_contract(str(ckpt))  # the same arguments: accepted
    trainer.args.per_device_train_batch_size = 4
    with pytest.raises(ValueError, match=r"saved with per_device_train_batch_size=2 \(this run: 4\); a resume is "
                                         r"exact only with the same values"):
        trainer.train(resume_from_checkpoint=True)
    trainer.args.ignore_data_skip = True  # the user accepts another data path: a warning only
    assert trainer.resolve_checkpoint(True) == str(ckpt)
