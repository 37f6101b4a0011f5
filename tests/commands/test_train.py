"""``seqlevel train`` on HfArgumentParser: every TrainingArguments flag, --config files, every objective, LoRA,
train_results.json, and the NLL logged next to the objective."""

from __future__ import annotations

import glob
import json

import pytest

from seqlevel.cli import _parse, main

LINES = "the cat sat on the mat\na dog ran in the park\nhello world\nsome more text here\n"


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text(LINES * 2)
    return str(p)


def _config(argv):
    from seqlevel.commands.train import _options

    script, cls, opts = _options(_parse(["train", *argv]))
    return script, cls(**opts)


def test_config_file_gives_the_same_run_as_flags(tmp_path, data):
    out = str(tmp_path / "o")
    flags = ["--model", "tiny-gpt2", "--dataset", data, "--output-dir", out, "--objective", "tailr",
             "--tailr-gamma", "0.5", "--batch-size", "4", "--lr", "0.01", "--max_steps", "3", "--warmup-steps", "1",
             "--lr_scheduler_type", "constant", "--save-total-limit", "1", "--bf16", "false"]
    (tmp_path / "run.yaml").write_text(
        f"model: tiny-gpt2\ndataset: {data}\noutput_dir: {out}\nobjective: tailr\ntailr_gamma: 0.5\nbatch_size: 4\n"
        "learning_rate: 0.01\nmax-steps: 3\nwarmup_steps: 1\nlr_scheduler_type: constant\nsave_total_limit: 1\n"
        "bf16: false\n")
    (tmp_path / "run.json").write_text(json.dumps({"model": "tiny-gpt2", "dataset": data, "output_dir": out,
                                                   "objective": "tailr", "tailr_gamma": 0.5, "lr": 0.01,
                                                   "per_device_train_batch_size": 4, "max_steps": 3,
                                                   "warmup_steps": 1, "lr_scheduler_type": "constant",
                                                   "save_total_limit": 1, "bf16": False}))
    s1, c1 = _config(flags)
    s2, c2 = _config(["--config", str(tmp_path / "run.yaml")])
    s3, c3 = _config(["--config", str(tmp_path / "run.json")])
    assert c1.to_dict() == c2.to_dict() == c3.to_dict()
    assert (c1.objective, c1.tailr_gamma, c1.learning_rate, c1.per_device_train_batch_size) == ("tailr", 0.5, 0.01, 4)
    assert c1.save_total_limit == 1 and c1.lr_scheduler_type == "constant"
    # a flag on the command line overrides the file
    _, c4 = _config(["--config", str(tmp_path / "run.yaml"), "--tailr_gamma", "0.25"])
    assert c4.tailr_gamma == 0.25


def test_each_method_keeps_its_own_defaults_and_foreign_options_are_refused(tmp_path, data, capsys):
    from seqlevel.trainers import AttributeConfig, SequenceMatchConfig

    base = ["--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(tmp_path / "o")]
    _, sm = _config([*base, "--objective", "sequencematch"])
    assert isinstance(sm, SequenceMatchConfig) and sm.gamma == SequenceMatchConfig.__dataclass_fields__["gamma"].default
    _, cat = _config([*base, "--objective", "cat", "--attribute-kind", "numeric"])
    assert isinstance(cat, AttributeConfig) and cat.attribute_kind == "numeric"
    rc = main(["train", *base, "--objective", "mixce", "--p-noise", "0.3"])
    err = capsys.readouterr().err
    assert rc == 2 and "--p-noise is an option of --objective sequencematch" in err
    assert not (tmp_path / "o").exists()


def test_tensorboard_has_eval_loss_and_train_nll(tmp_path, data, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    rc = main(["train", "--model", "tiny-gpt2", "--dataset", data, "--eval-dataset", data, "--output-dir", str(out),
               "--max-steps", "10", "--report_to", "tensorboard", "--eval_strategy", "steps", "--eval_steps", "5",
               "--logging-steps", "5", "--save_strategy", "no", "--json"])
    assert rc == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results == json.loads((out / "train_results.json").read_text())
    assert results["train_loss"] > 0
    tags = set()
    for f in glob.glob(str(out / "**" / "events*"), recursive=True):
        ea = EventAccumulator(f)
        ea.Reload()
        tags |= set(ea.Tags()["scalars"])
    assert {"eval/loss", "train/nll", "train/loss"} <= tags


def test_nll_is_logged_next_to_the_objective_and_is_the_mle_loss(tmp_path):
    """MixCE's loss is about η·NLL; the logged nll is the plain NLL (equal to the loss under --objective mle)."""
    import datasets

    from seqlevel.presets import byte_tokenizer, tiny_model
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    ds = datasets.Dataset.from_dict({"text": LINES.splitlines()})
    tok = byte_tokenizer()
    logs = {}
    for obj in ("mle", "mixce"):
        cfg = MixCEConfig(output_dir=str(tmp_path / f"api-{obj}"), objective=obj, mixce_eta=0.1, max_steps=1,
                          logging_steps=1, save_strategy="no", report_to="none", learning_rate=0.0)
        tr = MixCETrainer(model=tiny_model("tiny-gpt2", tokenizer=tok, seed=0), args=cfg, train_dataset=ds,
                          processing_class=tok)
        tr.train()
        logs[obj] = next(h for h in tr.state.log_history if "loss" in h)
    # lr 0 and one step: both runs see the same weights and batch, so mixce's nll equals mle's loss (4 decimals)
    assert logs["mixce"]["nll"] == pytest.approx(logs["mle"]["loss"], abs=2e-3)
    assert logs["mixce"]["loss"] < 0.5 * logs["mixce"]["nll"]  # η=0.1: the objective is far below the NLL


def test_cat_from_the_command_line_then_explain(tmp_path, capsys):
    rows = ["text,attribute"] + [("great food and nice staff,1" if i % 2 else "awful food and rude staff,0")
                                 for i in range(16)]
    csv = tmp_path / "reviews.csv"
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "cat"
    assert main(["train", "--objective", "cat", "--model", "tiny-gpt2", "--dataset", str(csv), "--output-dir",
                 str(out), "--max-steps", "2", "--batch-size", "4"]) == 0
    assert (out / "attribute_head_config.json").is_file() and (out / "train_results.json").is_file()
    capsys.readouterr()
    assert main(["explain", "--model", str(out), "--text", "great food", "--output", str(tmp_path / "x.png")]) == 0
    printed = capsys.readouterr().out
    assert "credit(a=1)" in printed and (tmp_path / "x.png").is_file()


def test_sequencematch_refuses_a_run_that_never_leaves_bc_warmup(tmp_path, data, capsys):
    rc = main(["train", "--objective", "sequencematch", "--model", "tiny-gpt2", "--dataset", data, "--output-dir",
               str(tmp_path / "o"), "--max-steps", "5", "--bc-warmup-steps", "10"])
    err = capsys.readouterr().err
    assert rc == 2 and "never leave the behaviour-cloning warm-up" in err and "--max-steps above 10" in err
    assert not (tmp_path / "o").exists()


def test_presets_get_a_from_scratch_learning_rate_printed(tmp_path, data, capsys):
    from seqlevel.commands.train import FROM_SCRATCH_LR

    assert main(["train", "--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(tmp_path / "o"),
                 "--max-steps", "1", "--save_strategy", "no"]) == 0
    err = capsys.readouterr().err
    assert f"learning_rate {FROM_SCRATCH_LR:g}: the from-scratch default" in err
    _, cfg = _config(["--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(tmp_path / "p"), "--lr", "0.5"])
    assert cfg.learning_rate == 0.5


@pytest.mark.parametrize("objective", ["mixce", "sequencematch", "cat"])
def test_lora_flags(tmp_path, objective, capsys):
    pytest.importorskip("peft")
    data = tmp_path / ("d.csv" if objective == "cat" else "d.txt")
    data.write_text("text,attribute\nab cd,1\nef gh,0\nij kl,1\nmn op,0\n" if objective == "cat"
                    else "12+3=15\n7+8=15\n20-5=15\n9+9=18\n")
    out = tmp_path / "o"
    extra = (["--bc-warmup-steps", "1", "--sample-every", "1", "--rollouts-per-refresh", "2",
              "--replay-buffer-size", "4", "--max-new-actions", "6"] if objective == "sequencematch" else [])
    rc = main(["train", "--objective", objective, "--model", "tiny-llama", "--dataset", str(data), "--output-dir",
               str(out), "--max-steps", "2", "--batch-size", "2", "--use-peft", "--lora-r", "4", "--lora-alpha",
               "8", "--lora-target-modules", "q_proj", "v_proj", "--save_strategy", "no", *extra])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "LoRA on: rank 4, alpha 8, dropout 0.05, modules q_proj v_proj" in err  # the run header says so
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)  # the merged model is saved: every command can load it


@pytest.mark.parametrize("objective", ["mle", "mixce", "tailr", "dft", "sequencematch", "cat"])
def test_prompt_completion_records_train_with_every_objective(tmp_path, objective):
    recs = [{"prompt": f"{a}+{b}=", "completion": str(a + b), "attribute": (a + b) % 2} for a in range(3)
            for b in range(3)]
    data = tmp_path / "pc.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    extra = {"sequencematch": ["--bc-warmup-steps", "1", "--sample-every", "1", "--rollouts-per-refresh", "2",
                               "--replay-buffer-size", "4", "--max-new-actions", "6"]}.get(objective, [])
    assert main(["train", "--objective", objective, "--model", "tiny-gpt2", "--dataset", str(data), "--output-dir",
                 str(tmp_path / "o"), "--max-steps", "2", "--batch-size", "4", "--save_strategy", "no",
                 *extra]) == 0


def test_cat_collator_keeps_the_completion_mask():
    from seqlevel.trainers.attribute import AttributeCollator

    batch = AttributeCollator(0, "binary")([{"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1], "attribute": 1}])
    assert batch["labels"].tolist() == [[-100, 6, 7]]


def test_generate_reads_prompts_with_the_dataset_loader(tmp_path, capsys):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "ab", "completion": "x"}) + "\n" + json.dumps({"prompt": "cd"}) + "\n")
    assert main(["generate", "--model", "tiny-gpt2", "--prompts", str(p), "--max-new-actions", "3", "--seed", "0",
                 "--json"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in recs] == ["ab", "cd"]


# ----- issue 23: messages that name the flag the user typed -----------------------------------------------------
def _err(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_eval_strategy_with_sequencematch_names_what_is_wrong(tmp_path, data, capsys):
    base = ["train", "--objective", "sequencematch", "--model", "tiny-gpt2", "--output-dir", str(tmp_path / "o")]
    err = _err([*base, "--dataset", "arithmetic", "--eval-dataset", data, "--eval-strategy", "steps"], capsys)
    assert "--eval-dataset is not supported with --objective sequencematch" in err
    assert "IntervalStrategy" not in err and "pass --eval-dataset" not in err
    err = _err([*base, "--dataset", data, "--eval-strategy", "steps"], capsys)
    assert "--eval-strategy steps needs evaluation data, which --objective sequencematch does not take" in err
    err = _err(["train", "--model", "tiny-gpt2", "--output-dir", str(tmp_path / "m"), "--dataset", data,
                "--eval-strategy", "epoch"], capsys)
    assert err.endswith("--eval-strategy epoch needs evaluation data; pass --eval-dataset PATH")


def test_lora_rank_zero_names_the_flag(tmp_path, data, capsys):
    err = _err(["train", "--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(tmp_path / "o"),
                "--use-peft", "--lora-r", "0"], capsys)
    assert "--lora-r must be a positive integer (the LoRA rank), got 0" in err
    assert not (tmp_path / "o").exists()


def test_an_alias_and_its_option_with_different_values_is_an_error(tmp_path, data, capsys):
    for argv in (["--batch-size", "8", "--per-device-train-batch-size", "4"],
                 ["--per-device-train-batch-size", "4", "--batch-size", "8"]):
        err = _err(["train", "--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(tmp_path / "o"), *argv],
                   capsys)
        assert "--batch-size 8 and --per-device-train-batch-size 4 set the same option" in err, err
    _, cfg = _config(["--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(tmp_path / "p"),
                      "--batch-size", "4", "--per_device_train_batch_size", "4"])
    assert cfg.per_device_train_batch_size == 4  # the same value twice is fine


def test_no_flag_help_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no_append_eos, --no-append-eos switch off --append-eos (on by default: append <eos>" in text


def test_bf16_on_a_machine_without_a_gpu_is_our_one_line(tmp_path, data, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _err(["train", "--model", "tiny-gpt2", "--dataset", data, "--output-dir", str(tmp_path / "o"), "--bf16"],
               capsys)
    assert err.endswith("--bf16 needs a CUDA GPU, and none is available on this machine; drop --bf16 (training on "
                        "the CPU runs in float32)")
