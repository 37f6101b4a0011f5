"""A quiet console: at most ~8 numbers per log line and no tables on the console, everything in log_history;
one "Writing model shards" bar per run (the final save), not one per checkpoint."""

import ast

import datasets

from seqlevel.presets import tiny_model
from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict
from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer
from seqlevel.trainers.console import CONSOLE_KEYS, console_logs


def test_console_logs_keeps_the_loss_first_and_drops_tables():
    logs = {f"sm/k{i}": float(i) for i in range(20)} | {"rollouts": "| a | b |\n|---|---|", "nll": 2.0,
                                                         "loss": 1.0, "epoch": 0.5, "total_flos": 3.0}
    shown = console_logs(logs)
    assert list(shown)[:2] == ["loss", "nll"] and len(shown) == CONSOLE_KEYS + 1 and shown["epoch"] == 0.5
    assert "rollouts" not in shown and "total_flos" not in shown
    assert console_logs({"rollouts": "| table |", "epoch": 1.0}) == {}  # a table-only log prints nothing


def _trainer(tmp_path, disable_tqdm: bool):
    tok = arithmetic_tokenizer()
    train, _ = make_splits(32, 1, seed=0, train_entropy=(2, 3), test_entropy=(2, 3))
    cfg = SequenceMatchConfig(output_dir=str(tmp_path / "sm"), report_to="none", max_steps=4,
                              per_device_train_batch_size=8, logging_steps=1, save_strategy="steps", save_steps=2,
                              use_cpu=True, seed=0, disable_tqdm=disable_tqdm, bc_warmup_steps=1, sample_every=2,
                              rollouts_per_refresh=8, replay_buffer_size=8, replay_batch_size=4, max_new_actions=8,
                              p_noise=0.3, noise_type="task", gamma=0.9)
    return SequenceMatchTrainer(tiny_model("tiny-gpt2", tokenizer=tok, seed=0), args=cfg,
                                train_dataset=datasets.Dataset.from_dict(to_dataset_dict(train, tok)),
                                processing_class=tok, noise_fn=task_noise(tok))


def test_sequencematch_console_lines_are_short_and_hold_no_table(tmp_path, capsys):
    for disable_tqdm in (True, False):
        tr = _trainer(tmp_path / str(disable_tqdm), disable_tqdm)
        tr.train()
        tr.save_model(tr.args.output_dir)
        out, err = capsys.readouterr()
        lines = [ln for ln in (out + err).replace("\r", "\n").splitlines() if ln.startswith("{")]
        assert lines and "String too long" not in out + err
        assert all(len(ast.literal_eval(ln)) <= CONSOLE_KEYS + 1 for ln in lines), lines
        history = tr.state.log_history
        assert any("rollouts" in h for h in history)  # the tables still reach the logs
        assert max(len(h) for h in history) > CONSOLE_KEYS + 1  # and every diagnostic key too
        # checkpoints at steps 2 and 4 save silently; the final model shows the one bar
        assert (out + err).count("Writing model shards:   0%") <= 1
