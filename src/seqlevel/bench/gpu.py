"""``seqlevel bench gpu``: tokens/s and model FLOPs utilisation of MLE vs MixCE vs SequenceMatch on one GPU.

Runs (1) the ``seqlevel bench speed`` cases and (2) bf16 optimizer steps of a ~100M-parameter model built from a
config (no download) for each objective on the same number of token slots:

* ``mle``: causal LM, ``mle_loss`` on full logits;
* ``mixce``: the same, ``mixce_loss(eta=0.5)``;
* ``sequencematch``: an encoded batch with ~20% backspaces (4-D mask, position ids), half data / half model rows,
  the trainer's ``½ BC + ½ SM`` on full logits;
* ``sequencematch-chunked``: the same from the decoder's hidden states with the chunked (V, Q) loss
  (:mod:`seqlevel.losses.chunked_sequencematch`), no ``(B, T, A)`` logits.

MFU = ``6 · N · tokens/s ÷ peak FLOP/s`` with ``N`` the matmul parameters (every parameter but the input
embedding; a tied output projection counts once) and attention-score FLOPs left out (the usual ``6N``
approximation). ``--peak-flops`` defaults to 989e12, the H100 SXM dense bf16 figure; pass your GPU's own.
``--dry-run`` (or ``--device cpu``) runs a tiny config for a few steps so the script can be checked without a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from seqlevel.bench import progress
from seqlevel.bench.cases import device_sync, random_tokens

H100_BF16_DENSE_FLOPS = 989e12
OBJECTIVES = ("mle", "mixce", "sequencematch", "sequencematch-chunked")
# ~110M parameters: Llama-style, 12 x 768, tied 32k embeddings (GPT-2-small class)
MODEL_100M = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                  num_key_value_heads=12, max_position_embeddings=2048, tie_word_embeddings=True)
MODEL_TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)


def build_model(tiny: bool, vocab_size: int, device: str, dtype: torch.dtype):
    """A randomly initialised ``LlamaForCausalLM`` from :data:`MODEL_100M` (or :data:`MODEL_TINY`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, attn_implementation="sdpa", **(MODEL_TINY if tiny else MODEL_100M))
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype)


def matmul_params(model) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (a tied head counts once)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters())
    return n if head.data_ptr() == emb.data_ptr() else n - emb.numel()


def make_step(objective: str, model, B: int, T: int, device: str, dtype: torch.dtype):
    """One AdamW step of ``objective`` on a fixed batch of ``B × T`` slots; returns a zero-argument callable."""
    from seqlevel.backspace import model_inputs
    from seqlevel.bench.cases.sequencematch import synthetic_batch
    from seqlevel.losses import bc_loss, mixce_loss, mle_loss, sequencematch_loss
    from seqlevel.losses.chunked_sequencematch import chunked_sequencematch_loss

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose from {OBJECTIVES}")
    V = model.get_output_embeddings().weight.shape[0]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
    ids = random_tokens(B, T, V, low=3, high=V - 1).to(device)
    batch = {k: v.to(device) for k, v in synthetic_batch(B, T, V, p_backspace=0.2, dtype=dtype).items()}
    inputs = model_inputs(batch)

    def loss_fn():
        if objective in ("mle", "mixce"):
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1]  # (B, T-1, V)
            return mle_loss(logits, ids[:, 1:]) if objective == "mle" else mixce_loss(logits, ids[:, 1:], 0.5)
        if objective == "sequencematch":
            logits = model(**inputs, use_cache=False).logits  # (B, T, A): slot t scores labels[:, t]
            return 0.5 * bc_loss(logits, batch) + 0.5 * sequencematch_loss(logits, batch)
        hidden = model.model(**inputs, use_cache=False).last_hidden_state  # (B, T, d): no logits
        return 0.5 * chunked_sequencematch_loss(hidden, model.lm_head.weight, batch, bc_weight=1.0, chunk_size=2048)

    def step():
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def time_objective(objective: str, model, B: int, T: int, device: str, dtype: torch.dtype, steps: int,
                   warmup: int, peak_flops: float) -> dict:
    """Median step time, tokens/s and MFU of ``objective`` (see the module docstring for the FLOP count)."""
    step = make_step(objective, model, B, T, device, dtype)
    sync = device_sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    med = sorted(times)[len(times) // 2]
    tps = B * T / med
    n = matmul_params(model)
    out = {"objective": objective, "step_s": med, "tokens_per_s": tps, "mfu": 6 * n * tps / peak_flops,
           "loss": float(loss.detach().float())}
    if device.startswith("cuda"):
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


@dataclass
class Config:
    """What to time on the GPU (the defaults: a ~110M Llama, batch 8 x 1024, V = 32,000, every objective)."""

    device: str = "cuda"
    """torch device; cpu runs the tiny config."""
    dry_run: bool = False
    """Tiny config, 2 steps, on CPU unless --device says otherwise."""
    batch: int = 8
    """Sequences per step."""
    seq_len: int = 1024
    """Token slots per sequence."""
    vocab_size: int = 32000
    """Vocabulary incl. <bksp>."""
    steps: int = 10
    """Timed steps per objective."""
    warmup: int = 3
    """Untimed steps first."""
    peak_flops: float = H100_BF16_DENSE_FLOPS
    """Peak FLOP/s of the device for MFU (default: H100 SXM dense bf16)."""
    objectives: tuple[str, ...] = OBJECTIVES
    """Objectives to time: mle, mixce, sequencematch, sequencematch-chunked."""
    speed_cases: tuple[str, ...] | None = None
    """`seqlevel bench speed` cases to run first (default: all; none with --dry-run)."""

    def __post_init__(self):
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad:
            raise ValueError(f"unknown objective(s) {bad}; choose from {OBJECTIVES}")
        for name, v in (("--batch", self.batch), ("--seq-len", self.seq_len), ("--steps", self.steps)):
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")


def run(cfg: Config) -> dict:
    """Speed cases, then timed bf16 steps of each objective; returns the JSON-able result."""
    device = "cpu" if cfg.dry_run and cfg.device == "cuda" else cfg.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("seqlevel bench gpu needs CUDA, which is not available here; run it on a GPU machine, or "
                         "pass --dry-run (tiny config on CPU) to check the script")
    tiny = cfg.dry_run or device == "cpu"
    B, T, V = (2, 32, 256) if tiny else (cfg.batch, cfg.seq_len, cfg.vocab_size)
    steps, warmup = (2, 1) if cfg.dry_run else (cfg.steps, cfg.warmup)
    from seqlevel.bench import speed
    from seqlevel.bench.cases import names

    cases = sorted(names("speed")) if cfg.speed_cases is None and not cfg.dry_run else list(cfg.speed_cases or ())
    result = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
              "dtype": "bfloat16", "peak_flops": cfg.peak_flops, "batch": B, "seq_len": T, "vocab_size": V,
              "speed_cases": [], "steps": []}
    with progress.bar("gpu", total=len(cases) + len(cfg.objectives), unit="case"):
        for name in cases:
            progress.note(name)
            case = speed.build_case(name, device=device, quick=tiny)
            result["speed_cases"].append({"case": name, **speed.measure(case, runs=steps if tiny else 20,
                                                                         warmup=warmup)})
            progress.advance(1)
        model = build_model(tiny, V, device, torch.bfloat16)
        model.train()
        result["params"] = sum(p.numel() for p in model.parameters())
        result["matmul_params"] = matmul_params(model)
        for obj in cfg.objectives:
            progress.note(obj)
            result["steps"].append(time_objective(obj, model, B, T, device, torch.bfloat16, steps, warmup,
                                                  cfg.peak_flops))
            progress.advance(1)
    return result


def format_result(result: dict) -> str:
    """Speed ratios, then step time, tokens/s and MFU per objective."""
    lines = [f"device {result['device']}, bf16, {result['params'] / 1e6:.1f}M params, batch {result['batch']}x"
             f"{result['seq_len']}, V={result['vocab_size']}, peak {result['peak_flops']:.3g} FLOP/s"]
    for c in result["speed_cases"]:
        lines.append(f"  speed {c['case']:<32} ratio {c['ratio_median']:.3f}")
    lines.append(f"  {'objective':<24}{'step ms':>10}{'tokens/s':>12}{'MFU':>8}")
    for s in result["steps"]:
        lines.append(f"  {s['objective']:<24}{s['step_s'] * 1e3:>10.1f}{s['tokens_per_s']:>12.0f}{s['mfu']:>8.3f}")
    return "\n".join(lines)
