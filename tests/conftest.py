"""Shared fixtures: tiny models built from configs and tokenizers built locally. Nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

from seqlevel.presets import byte_tokenizer, char_tokenizer, tiny_model  # noqa: E402

torch.set_num_threads(1)  # tests run two at a time on 2 cores (pytest -n 2)

FAMILIES = ["tiny-gpt2", "tiny-llama"]
ATTN = ["sdpa", "eager"]


@pytest.fixture(scope="session")
def byte_tok():
    """Byte-level tokenizer (256 bytes + <pad> <bos> <eos>)."""
    return byte_tokenizer()


@pytest.fixture(scope="session")
def digit_tok():
    """Character tokenizer over digits, signs and a few letters; ids 0..3 are <pad> <bos> <eos> <unk>."""
    return char_tokenizer("0123456789+-=_ abcdefxyz")


@pytest.fixture(params=FAMILIES)
def family(request):
    """Both model families: GPT-2 (learned positions, tied embeddings) and Llama (RoPE, untied head)."""
    return request.param


@pytest.fixture(params=ATTN)
def attn(request):
    return request.param


@pytest.fixture
def make_model():
    """Factory: ``make_model(preset, vocab_size=64, attn='sdpa', seed=0, tokenizer=None)``, in eval mode."""

    def _make(preset="tiny-gpt2", vocab_size=64, attn="sdpa", seed=0, tokenizer=None, **kw):
        m = tiny_model(preset, vocab_size=vocab_size, seed=seed, attn_implementation=attn, tokenizer=tokenizer, **kw)
        return m.eval()

    return _make


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs with its pytest tmp path as the working directory, so a default relative output directory
    (``runs/...`` of a benchmark, ``trainer_output`` of a config) lands there and never in the working tree."""
    monkeypatch.chdir(tmp_path)
