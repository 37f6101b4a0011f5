"""seqlevel bench gpu / benchmarks/gpu.sh on CPU: the dry run works end to end, and without CUDA both refuse."""

import json
import os
import subprocess

import pytest
import torch

from seqlevel.bench.gpu import H100_BF16_DENSE_FLOPS, MODEL_100M, build_model, matmul_params
from seqlevel.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dry_run_json_reports_every_objective(capsys):
    rc = main(["bench", "gpu", "--dry-run", "--speed-cases", "mixce-vs-mle", "--peak-flops", "1e12", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"] == "cpu" and out["peak_flops"] == 1e12
    assert [s["objective"] for s in out["steps"]] == ["mle", "mixce", "sequencematch", "sequencematch-chunked"]
    tokens = out["batch"] * out["seq_len"]
    for s in out["steps"]:
        assert s["tokens_per_s"] == pytest.approx(tokens / s["step_s"])
        assert s["mfu"] == pytest.approx(6 * out["matmul_params"] * s["tokens_per_s"] / 1e12)
        assert torch.isfinite(torch.tensor(s["loss"]))
    assert out["speed_cases"][0]["case"] == "mixce-vs-mle" and out["speed_cases"][0]["ratio_median"] > 0


def test_default_peak_is_h100_bf16_and_model_is_100m_class():
    assert H100_BF16_DENSE_FLOPS == 989e12
    with torch.device("meta"):
        from transformers import LlamaConfig, LlamaForCausalLM

        m = LlamaForCausalLM(LlamaConfig(vocab_size=32000, **MODEL_100M))
    n = sum(p.numel() for p in m.parameters())
    assert 90e6 < n < 150e6
    assert matmul_params(m) == n  # tied head: the embedding is the output projection's matmul weight


def test_untied_model_leaves_the_input_embedding_out():
    m = build_model(True, 64, "cpu", torch.float32)
    m.config.tie_word_embeddings = False
    m.lm_head.weight = torch.nn.Parameter(m.lm_head.weight.detach().clone())
    n = sum(p.numel() for p in m.parameters())
    assert matmul_params(m) == n - m.get_input_embeddings().weight.numel()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_refuses_without_cuda(capsys):
    assert main(["bench", "gpu"]) == 2
    assert "needs CUDA" in capsys.readouterr().err
    res = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu.sh")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2
    assert "no CUDA device" in res.stderr and "--dry-run" in res.stderr


def test_bad_objective(capsys):
    assert main(["bench", "gpu", "--dry-run", "--objectives", "mle,ppo"]) == 2
    assert "unknown objective" in capsys.readouterr().err
