"""Tiny models and local tokenizers: built from configs, never downloaded.

Used by the tests, the demo, the benchmarks and ``seqlevel train --model tiny-gpt2``. Every builder here is
offline and deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"

# name -> (family, config kwargs). Sizes chosen so CPU tests run in seconds.
MODEL_PRESETS: dict[str, tuple[str, dict]] = {
    "tiny-gpt2": ("gpt2", dict(n_layer=2, n_embd=32, n_head=4, n_positions=256)),
    "tiny-llama": (
        "llama",
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256),
    ),
    "small-gpt2": ("gpt2", dict(n_layer=4, n_embd=128, n_head=4, n_positions=512)),
    "small-llama": (
        "llama",
        dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512),
    ),
}


def tiny_model(
    preset: str = "tiny-gpt2",
    vocab_size: int = 64,
    *,
    seed: int = 0,
    attn_implementation: str = "sdpa",
    tokenizer: PreTrainedTokenizerFast | None = None,
    **overrides,
) -> PreTrainedModel:
    """A randomly initialised causal LM from a named preset.

    Args:
        preset: one of ``MODEL_PRESETS`` (``tiny-gpt2``, ``tiny-llama``, ``small-gpt2``, ``small-llama``).
        vocab_size: output vocabulary; ignored when ``tokenizer`` is given (``len(tokenizer)`` is used).
        seed: torch seed for the initialisation.
        attn_implementation: ``"sdpa"`` or ``"eager"``.
        tokenizer: if given, vocabulary size and special-token ids are taken from it.
        **overrides: extra config fields.

    Returns:
        A ``GPT2LMHeadModel`` or ``LlamaForCausalLM`` in fp32, eval mode off (as constructed).
    """
    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(MODEL_PRESETS)} "
                         "or pass a Hugging Face model name or path")
    family, kwargs = MODEL_PRESETS[preset]
    kwargs = {**kwargs, **overrides}
    if tokenizer is not None:
        vocab_size = len(tokenizer)
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        kwargs.setdefault("bos_token_id", tokenizer.bos_token_id)
        kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    else:  # keep special ids inside the vocabulary (GPT-2's defaults point at 50256)
        kwargs.setdefault("bos_token_id", vocab_size - 1)
        kwargs.setdefault("eos_token_id", vocab_size - 1)
    torch.manual_seed(seed)
    if family == "gpt2":
        config = GPT2Config(vocab_size=vocab_size, **kwargs)
        model = GPT2LMHeadModel._from_config(config, attn_implementation=attn_implementation)
    else:
        config = LlamaConfig(vocab_size=vocab_size, **kwargs)
        model = LlamaForCausalLM._from_config(config, attn_implementation=attn_implementation)
    return model


def _wrap(tok: Tokenizer, specials: list[str], model_max_length: int) -> PreTrainedTokenizerFast:
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK if UNK in specials else None,
        model_max_length=model_max_length,
    )
    fast.padding_side = "right"
    return fast


def byte_tokenizer(model_max_length: int = 1024, extra_special_tokens: Iterable[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: 256 byte tokens + ``<pad> <bos> <eos>`` (+ extras); lossless on any UTF-8.

    Built with ``tokenizers`` (ByteLevel BPE with no merges) and wrapped as a transformers fast tokenizer, so
    padding, ``save_pretrained`` and ``decode`` work unchanged.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok, [PAD, BOS, EOS, *extra_special_tokens], model_max_length)


def char_tokenizer(
    alphabet: Iterable[str], model_max_length: int = 1024, extra_special_tokens: Iterable[str] = ()
) -> PreTrainedTokenizerFast:
    """Character-level tokenizer over a fixed alphabet + ``<pad> <bos> <eos> <unk>`` (+ extras).

    Each character is one token; decoding concatenates without spaces. Special tokens come first, so their
    ids are 0..3 (pad, bos, eos, unk) followed by the alphabet in the order given (duplicates dropped).
    """
    chars = list(dict.fromkeys(alphabet))
    if not chars:
        raise ValueError("alphabet is empty; pass the characters the tokenizer must know, e.g. '0123456789+-'")
    if any(len(c) != 1 for c in chars):
        raise ValueError(f"alphabet entries must be single characters, got {[c for c in chars if len(c) != 1]}")
    specials = [PAD, BOS, EOS, UNK]
    vocab = {s: i for i, s in enumerate(specials)}
    for c in chars:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok, [*specials, *extra_special_tokens], model_max_length)
