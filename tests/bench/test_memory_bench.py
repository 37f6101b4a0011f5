import json

from seqlevel.cli import main


def test_memory_bench_json_contract_small(capsys):
    rc = main(["bench", "memory", "--vocab-sizes", "1024,4096", "--tokens", "128", "--hidden", "16", "--chunk", "32",
               "--json"])
    assert rc == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert {c["loss"] for c in cases} >= {"mle", "mixce"}
    assert {c["vocab_size"] for c in cases} == {1024, 4096}
    for c in cases:
        assert set(c) == {"loss", "vocab_size", "peak_bytes", "mle_peak_bytes", "ratio"}
        assert c["ratio"] <= 1.1, c


def test_memory_bench_bad_vocab(capsys):
    assert main(["bench", "memory", "--vocab-sizes", "32k"]) == 2
    assert "comma list of integers" in capsys.readouterr().err
