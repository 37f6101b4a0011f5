"""Rollout tables and credit maps in the training logs: rendering, and a TensorBoard event file holding them."""

import glob
import os

import datasets
import pytest
import torch

from seqlevel.attributes.estimate import trace
from seqlevel.decoding import GenerateOutput
from seqlevel.presets import tiny_model
from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict
from seqlevel.trainers import (
    AttributeConfig,
    AttributeTrainer,
    CreditMapCallback,
    RolloutTableCallback,
    SequenceMatchConfig,
    SequenceMatchTrainer,
)
from seqlevel.trainers.callbacks import markdown_table, render_actions

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _texts_in_events(output_dir: str) -> dict[str, list[str]]:
    """Every text summary in the TensorBoard event files under ``output_dir``: tag -> strings."""
    files = glob.glob(os.path.join(output_dir, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no TensorBoard event file under {output_dir}"
    out: dict[str, list[str]] = {}
    for f in files:
        ea = EventAccumulator(f, size_guidance={"tensors": 0})
        ea.Reload()
        for tag in ea.Tags()["tensors"]:
            for ev in ea.Tensors(tag):
                out.setdefault(tag, []).extend(s.decode("utf-8") for s in ev.tensor_proto.string_val)
    return out


def test_render_actions_and_markdown(digit_tok):
    ids = lambda s: digit_tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    bk = 99
    acts = ids("12+5") + [bk] + ids("3") + [bk, bk] + ids("=4") + [digit_tok.eos_token_id]
    assert render_actions(digit_tok, acts, bk) == "12+5⌫3⌫⌫=4"
    assert render_actions(digit_tok, [bk], bk) == "⌫"
    assert render_actions(digit_tok, acts, None) == digit_tok.decode(acts, skip_special_tokens=True)
    table = markdown_table(["a", "b"], [["x|y", "line\nbreak"], ["", 3]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | line ⏎ break |", "| – | 3 |"]


def test_rollout_table_rows_match_the_decoder_output(digit_tok):
    bk = 99
    ids = lambda s: digit_tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    out = GenerateOutput(actions=[ids("7") + [bk] + ids("8"), ids("9")], sequences=[ids("8"), ids("9")],
                         prompts=[[digit_tok.bos_token_id] + ids("1+"), [digit_tok.bos_token_id] + ids("2+")],
                         num_actions=torch.tensor([3, 1]), num_backspaces=torch.tensor([1, 0]),
                         finished=torch.tensor([False, False]))
    rows = RolloutTableCallback(num_rows=5).table(digit_tok, out, bk).splitlines()[2:]
    assert rows == ["| 1+ | 7⌫8 | 8 | 1 |", "| 2+ | 9 | 9 | 0 |"]
    with pytest.raises(ValueError, match="num_rows must be >= 1"):
        RolloutTableCallback(num_rows=0)


def test_sequencematch_run_logs_rollout_tables_to_tensorboard(tmp_path):
    tok = arithmetic_tokenizer()
    train, _ = make_splits(32, 1, seed=0, train_entropy=(2, 3), test_entropy=(2, 3))
    ds = datasets.Dataset.from_dict(to_dataset_dict(train, tok))
    cfg = SequenceMatchConfig(output_dir=str(tmp_path / "sm"), report_to="tensorboard", max_steps=4,
                              per_device_train_batch_size=8, logging_steps=1, save_strategy="no", use_cpu=True,
                              seed=0, disable_tqdm=True, bc_warmup_steps=1, sample_every=2, rollouts_per_refresh=16,
                              replay_buffer_size=16, replay_batch_size=4, max_new_actions=12, p_noise=0.3,
                              noise_type="task", gamma=0.9)
    tr = SequenceMatchTrainer(tiny_model("tiny-gpt2", tokenizer=tok, seed=0), args=cfg, train_dataset=ds,
                              processing_class=tok, noise_fn=task_noise(tok),
                              callbacks=[RolloutTableCallback(num_rows=16)])
    assert sum(isinstance(c, RolloutTableCallback) for c in tr.callback_handler.callbacks) == 1  # ours, not 2
    tr.train()
    tables = [h["rollouts"] for h in tr.state.log_history if "rollouts" in h]
    assert len(tables) == 2  # refreshes at steps 1 and 3
    for table in tables:
        for row in table.splitlines()[2:]:
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            assert int(cells[-1]) == cells[1].count("⌫")  # the count column matches the ⌫ drawn
    assert any("⌫" in t for t in tables)
    assert sum("loss" in h for h in tr.state.log_history) == 4  # the step logs are all still there
    texts = _texts_in_events(cfg.output_dir)
    tag = "train/rollouts/text_summary"  # the TensorBoard callback prefixes "train/"
    assert any("⌫" in s and "| prompt | actions" in s for s in texts[tag])


def test_attribute_run_logs_credit_map_to_tensorboard(tmp_path, byte_tok, make_model):
    texts = ["abc abc", "hello world", "xyz", "the cat sat", "a b c d e", "zzz yyy", "good", "bad bad"]
    stars = [0, 1, 2, 0, 1, 2, 2, 0]
    train = datasets.Dataset.from_dict({"text": texts, "attribute": stars})
    held = datasets.Dataset.from_dict({"text": ["good cat"], "attribute": [2]})
    cfg = AttributeConfig(output_dir=str(tmp_path / "cat"), report_to="tensorboard", max_steps=3,
                          per_device_train_batch_size=4, learning_rate=1e-2, logging_steps=1, save_strategy="no",
                          eval_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, attribute_kind="categorical",
                          num_classes=3)
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=cfg, train_dataset=train,
                          eval_dataset=held, processing_class=byte_tok)
    cb = next(c for c in tr.callback_handler.callbacks if isinstance(c, CreditMapCallback))
    assert cb.input_ids == tr.eval_dataset[0]["input_ids"] and cb.label == 2  # the held-out example
    tr.train()
    maps = [h["credit_map"] for h in tr.state.log_history if "credit_map" in h]
    assert len(maps) == 3  # every logging step
    assert sum("loss" in h for h in tr.state.log_history) == 3  # logging it did not swallow the step's loss log
    assert maps[0].startswith("credit toward a=2 on the held-out example")
    # the last map is the trained model's credit of that example (naive reference: trace())
    ref = trace(tr.model.eval(), torch.tensor([cb.input_ids])).credit[0, :, 2]
    got = [row.strip("|").split(" | ")[-1].strip() for row in maps[-1].split("\n\n", 1)[1].splitlines()[2:]]
    assert got == ["–"] + [f"{float(c):+.3f}" for c in ref[1:]]
    events = _texts_in_events(cfg.output_dir)
    tag = "train/credit_map/text_summary"
    assert any("credit c_t" in s for s in events[tag])


def test_user_credit_callback_takes_the_default_example(tmp_path, byte_tok, make_model):
    train = datasets.Dataset.from_dict({"text": ["abc abc", "hello"], "attribute": [1, 0]})
    cfg = AttributeConfig(output_dir=str(tmp_path / "c"), report_to="none", max_steps=1, use_cpu=True,
                          save_strategy="no", disable_tqdm=True)
    mine = CreditMapCallback(target=0, key="credit0")
    tr = AttributeTrainer(make_model("tiny-gpt2", tokenizer=byte_tok), args=cfg, train_dataset=train,
                          processing_class=byte_tok, callbacks=[mine])
    ours = [c for c in tr.callback_handler.callbacks if isinstance(c, CreditMapCallback)]
    assert ours == [mine] and mine.trainer is tr
    assert mine.input_ids == tr.train_dataset[0]["input_ids"] and "no eval_dataset" in mine.source
    assert mine.table(tr.model, byte_tok).startswith("credit toward a=0 on the first training example")
    no_tok = mine.table(tr.model, None).splitlines()
    assert no_tok[4].startswith(f"| 0 | {tr.train_dataset[0]['input_ids'][0]} |")  # ids when there is no tokenizer
