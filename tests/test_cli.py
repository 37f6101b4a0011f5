"""The `seqlevel` command: it parses, calls the library, and turns bad input into one clear line (exit 2)."""

import json
import subprocess
import sys

import pytest

from seqlevel.cli import main


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert "seqlevel" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "seqlevel", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "train" in out.stdout and "bench" in out.stdout


def test_train_end_to_end_writes_a_loadable_model(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("hello world\nthe cat sat\n\nabc def\n")
    out = tmp_path / "run"
    rc = main(["train", "--objective", "mixce", "--mixce-eta", "0.5", "--model", "tiny-gpt2", "--dataset", str(data),
               "--output-dir", str(out), "--max-steps", "2", "--batch-size", "2"])
    assert rc == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert m.config.vocab_size == len(tok)


@pytest.mark.parametrize("argv,msg", [
    (["--objective", "nope"], "unknown objective 'nope'"),
    (["--mixce-eta", "2"], r"mixce_eta must be in \[0, 1\]"),
    (["--dataset", "/nonexistent/x.txt"], "not found: looked for"),
])
def test_train_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, msg):
    data = tmp_path / "d.txt"
    data.write_text("hello\n")
    base = {"--objective": "mle", "--model": "tiny-gpt2", "--dataset": str(data), "--output-dir": str(tmp_path / "o")}
    base.update(dict(zip(argv[::2], argv[1::2])))
    rc = main(["train", *[x for kv in base.items() for x in kv]])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    import re

    assert re.search(msg, err)
    assert not (tmp_path / "o").exists(), "bad input must leave nothing on disk"


def test_train_output_dir_is_a_file(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("hello\n")
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["train", "--model", "tiny-gpt2", "--dataset", str(data), "--output-dir", str(f)])
    assert rc == 2 and "is a file" in capsys.readouterr().err


def test_train_empty_dataset(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("\n\n")
    rc = main(["train", "--model", "tiny-gpt2", "--dataset", str(data), "--output-dir", str(tmp_path / "o")])
    assert rc == 2 and "is empty" in capsys.readouterr().err


def test_bench_speed_json_contract(capsys):
    rc = main(["bench", "speed", "--case", "mixce-vs-mle", "--quick", "--runs", "2", "--warmup", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"case", "ratio_median", "a_median_s", "b_median_s", "runs"}
    assert out["case"] == "mixce-vs-mle" and out["runs"] == 2 and out["ratio_median"] > 0


def test_bench_speed_unknown_case(capsys):
    assert main(["bench", "speed", "--case", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--case must be one of" in err and "sm-step-vs-mle" in err and len(err.strip().splitlines()) == 1
    assert main(["bench", "speed"]) == 2
    assert "--case is required" in capsys.readouterr().err
