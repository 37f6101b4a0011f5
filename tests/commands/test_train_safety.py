"""``seqlevel train`` loses nothing: interrupts print the resume command, a full disk names the last checkpoint,
one run per directory, outputs readable by others, and a clean resume of a tied model."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import stat

import pytest

from seqlevel.cli import main


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("the cat sat on the mat\na dog ran in the park\nhello world\n" * 3)
    return str(p)


def _argv(data, out, *extra):
    return ["train", "--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(out), "--max-steps", "6",
            "--save-steps", "2", "--batch-size", "2", "--seed", "0", *extra]


def test_sigterm_prints_the_last_checkpoint_and_a_resume_command_that_works(tmp_path, data, capsys, monkeypatch):
    from seqlevel.trainers.mixce import MixCETrainer

    real = MixCETrainer.training_step

    def step(self, *a, **kw):
        if self.state.global_step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a cluster scheduler would
        return real(self, *a, **kw)

    monkeypatch.setattr(MixCETrainer, "training_step", step)
    out = tmp_path / "run"
    assert main(_argv(data, out)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"interrupted at step 3; the last complete checkpoint is {out / 'checkpoint-2'}" in err
    line = next(ln for ln in err.splitlines() if ln.startswith("resume with: "))
    argv = shlex.split(line[len("resume with: "):])
    assert argv[0] == "seqlevel" and argv[-1] == "--resume"
    monkeypatch.setattr(MixCETrainer, "training_step", real)
    assert main(argv[1:]) == 0
    assert (out / "checkpoint-6").is_dir() and (out / "train_results.json").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_full_disk_says_no_space_and_names_the_last_checkpoint(tmp_path, data, capsys, monkeypatch):
    from transformers import Trainer

    real = Trainer.save_model

    def full(self, output_dir=None, _internal_call=False):
        if not _internal_call:  # checkpoints save through here too; the final save is the one that fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, _internal_call)

    monkeypatch.setattr(Trainer, "save_model", full)  # the final save fails; checkpoints 2..6 were written
    out = tmp_path / "run"
    assert main(_argv(data, out, "--save_strategy", "steps")) == 1
    err = capsys.readouterr().err
    assert "no space left on device" in err and "checkpoint-6" in err and "--resume" in err
    assert "Traceback" not in err


def test_a_second_run_into_a_locked_directory_is_refused(tmp_path, data, capsys):
    fcntl = pytest.importorskip("fcntl")
    from seqlevel.commands.train_run import LOCK

    out = tmp_path / "run"
    out.mkdir()
    with open(out / LOCK, "w") as f:
        f.write("12345")
        f.flush()
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run that is still going
        assert main(_argv(data, out)) == 2
    err = capsys.readouterr().err
    assert "another seqlevel train (pid 12345) is writing to --output-dir" in err
    assert sorted(os.listdir(out)) == [LOCK], "the refused run wrote nothing"


def test_outputs_are_readable_by_others_and_the_lock_is_gone(tmp_path, data):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert main(_argv(data, out, "--max-steps", "2")) == 0
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes and all(m == 0o644 for m in modes.values()), modes
    assert ".seqlevel.lock" not in modes


def test_overwrite_output_dir_is_explicit_and_drops_old_checkpoints(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main(_argv(data, out, "--max-steps", "4")) == 0  # checkpoint-2 and checkpoint-4
    assert main(_argv(data, out, "--max-steps", "2")) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(_argv(data, out, "--max-steps", "2", "--overwrite-output-dir")) == 0
    # the previous run's checkpoint-4 is gone: a later --resume can only pick this run's checkpoint-2
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


def test_resume_of_a_tied_model_warns_about_no_missing_key(tmp_path, data, monkeypatch, capsys):
    import transformers.trainer as tt

    out = tmp_path / "run"
    assert main(_argv(data, out, "--max-steps", "2")) == 0
    said = []
    monkeypatch.setattr(tt.logger, "warning", lambda msg, *a, **k: said.append(str(msg)))
    capsys.readouterr()
    assert main(_argv(data, out, "--max-steps", "4", "--resume")) == 0
    assert not [m for m in said if "missing keys" in m], said
    assert f"  resuming from {out / 'checkpoint-2'}" in capsys.readouterr().err  # the run header names it


def test_explain_warns_about_words_outside_the_vocabulary(tmp_path, capsys):
    from seqlevel.attributes.model import AttributeModel
    from seqlevel.presets import char_tokenizer, tiny_model

    tok = char_tokenizer("abcdefgh ")
    model = AttributeModel.for_base(tiny_model("tiny-gpt2", tokenizer=tok), "binary", 2, 4)
    model.save_pretrained(tmp_path / "cat")
    tok.save_pretrained(tmp_path / "cat")
    assert main(["explain", "--model", str(tmp_path / "cat"), "--text", "abc xyz", "--output",
                 str(tmp_path / "e.png")]) == 0
    err = capsys.readouterr().err
    assert "1 word(s) are not in the model's vocabulary and are explained as <unk>: xyz" in err


def test_report_to_a_missing_integration_is_named(tmp_path, data, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    assert main(_argv(data, tmp_path / "o", "--report_to", "wandb")) == 2
    err = capsys.readouterr().err
    assert "--report_to wandb: WandbCallback requires wandb to be installed" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
