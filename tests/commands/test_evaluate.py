"""``seqlevel evaluate`` on data longer than the model's context: perplexity over what fits, no IndexError."""

import json

from seqlevel.cli import main


def test_examples_longer_than_the_context_are_evaluated(tmp_path, capsys):
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps({"text": f"word{i} " * 100}) + "\n" for i in range(3)))  # 700 bytes > 256
    assert main(["evaluate", "--model", "tiny-gpt2", "--data", str(data), "--no-mauve", "--num-samples", "3",
                 "--prompt-tokens", "10", "--max-new-actions", "4", "--output-dir", str(tmp_path / "ev"),
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["perplexity"] > 1 and metrics["perplexity_unit"] == "per token"
