"""Cases of the backtracking decoder :func:`seqlevel.decoding.generate` (issues 4 and 16).

* ``decode-vs-hf``: ``generate`` with a backspace id the model never chooses (A) against Hugging Face
  ``model.generate`` (B), greedy, same model and prompts, same number of new tokens. The outputs are checked to be
  identical when the case is built, so both do the same work.
* ``decode-backspace-vs-recompute``: ``generate`` with ~20% backspaces (A) against a decoder that keeps an
  ordinary KV cache for token steps but, because ``DynamicCache.crop`` trims every row alike, recomputes the
  batch's live states from scratch whenever a row backspaces (B). Both follow the same forced backspace schedule,
  greedy otherwise, so they take identical actions (checked when the case is built).
* ``rollout-throughput``: Hugging Face ``generate`` without backspaces (A) against ``generate`` with 20%
  backspaces (B), batch 64, the same number of actions per row: the ratio A/B is the actions per second of our
  rollouts relative to HF's, i.e. what making ``<bksp>`` possible at all costs (goal ≥ 0.9).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from seqlevel.bench.cases import SpeedCase, device_sync, random_tokens
from seqlevel.decoding import generate
from seqlevel.decoding.steer import ForcedBackspaces


def _workload(device: str, quick: bool, prompt_len: int, batch: int = 16):
    """Small GPT-2 (tiny when ``quick``) and ``(B, prompt_len)`` random prompts: the one decoding batch."""
    from seqlevel.presets import tiny_model

    V, B, N = (256, 4, 16) if quick else (2048, batch, 128)
    model = tiny_model("tiny-gpt2" if quick else "small-gpt2", vocab_size=V, seed=0).to(device).eval()
    ids = random_tokens(B, prompt_len, V).to(device)
    return model, ids, V, B, N


def _schedule(B: int, N: int, share: float, device: str) -> torch.Tensor:
    """``(B, N)`` bool: where each row must backspace (~``share`` of the steps, fixed seed)."""
    return (torch.rand(B, N, generator=torch.Generator().manual_seed(1)) < share).to(device)


def _hf_greedy(model, ids, n_new: int, eos: int | None = None):
    """HF greedy ``generate`` of ``n_new`` tokens as a zero-argument callable (``eos`` only ends rows early)."""
    am = torch.ones_like(ids)
    model.generation_config.eos_token_id = None

    def hf():
        return model.generate(input_ids=ids, attention_mask=am, do_sample=False, max_new_tokens=n_new,
                              eos_token_id=eos, pad_token_id=0)

    return hf


def _unused_ids(model, ids, n_new: int) -> list[int]:
    """The ids HF's greedy rows never produce (sorted): safe ``<bksp>``/``<eos>`` ids that change no action."""
    V = model.get_output_embeddings().weight.shape[0]
    return sorted(set(range(V)) - set(_hf_greedy(model, ids, n_new)()[:, ids.shape[1]:].flatten().tolist()))


def decode_vs_hf(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """Greedy, batch 16 x 128 new tokens on small GPT-2: ``generate`` with an unused ``<bksp>`` vs HF generate."""
    model, ids, V, B, N = _workload(device, quick, prompt_len=16)
    am = torch.ones_like(ids)
    # backspace/eos ids the greedy trajectories never take, so both decoders do exactly N steps of the same work
    unused = _unused_ids(model, ids, N)
    bksp, eos = unused[-1], unused[-2]
    hf = _hf_greedy(model, ids, N, eos)

    def ours():
        return generate(model, ids, am, max_new_actions=N, eos_token_id=eos, backspace_id=bksp, do_sample=False)

    ref = hf()[:, ids.shape[1]:].tolist()
    got = ours()
    if got.sequences != ref or int(got.num_backspaces.sum()) != 0:
        raise AssertionError("decode-vs-hf: the two decoders disagree; the comparison would be unfair")
    return SpeedCase(
        a=ours, b=hf,
        a_name=f"seqlevel.decoding.generate (backspace_id={bksp}, never chosen)",
        b_name="transformers model.generate(do_sample=False)",
        description=f"greedy, {'tiny' if quick else 'small'} GPT-2 V={V}, batch {B}, prompt {ids.shape[1]}, "
                    f"{N} new tokens",
        sync=device_sync(device),
    )


@torch.no_grad()
def _recompute_on_backspace(model, prompts: list[list[int]], n_actions: int, steer: ForcedBackspaces,
                            backspace_id: int) -> list[list[int]]:
    """The baseline: an ordinary batched KV-cache decoder that rebuilds the cache from scratch after a backspace."""
    device = next(model.parameters()).device
    live = [list(p) for p in prompts]
    B = len(live)
    rows = torch.arange(B, device=device)
    cache, mask, logits = None, None, None
    for step in range(n_actions):
        if cache is None:  # full recompute of every row's live state, left-padded
            W = max(len(s) for s in live)
            ids = torch.tensor([[0] * (W - len(s)) + s for s in live], device=device)
            mask = torch.tensor([[0] * (W - len(s)) + [1] * len(s) for s in live], device=device)
            cache = DynamicCache()
            out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                        cache=cache, use_cache=True, logits_to_keep=1)
            logits = out.logits[:, -1].float()
        ctx = type("Ctx", (), {"rows": rows, "step": step})()
        action = steer(logits, ctx).argmax(dim=-1)
        bk = (action == backspace_id).tolist()
        for b, (a, is_bk) in enumerate(zip(action.tolist(), bk)):
            if not is_bk:
                live[b].append(a)
            elif len(live[b]) > len(prompts[b]):
                live[b].pop()
        if any(bk):
            cache = None  # DynamicCache.crop cannot trim one row: start again from the live states
            continue
        mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
        pos = torch.tensor([[len(s) - 1] for s in live], device=device)
        out = model(input_ids=action[:, None], attention_mask=mask, position_ids=pos, cache=cache,
                    use_cache=True)
        logits = out.logits[:, -1].float()
    return [s[len(p):] for s, p in zip(live, prompts)]


def decode_backspace_vs_recompute(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """Greedy with ~20% forced backspaces, batch 16 x 128 actions: ``generate`` vs recompute-on-backspace."""
    model, ids, V, B, N = _workload(device, quick, prompt_len=32)
    bksp = V - 1
    steer = ForcedBackspaces(_schedule(B, N, 0.2, device), bksp)
    prompts = ids.tolist()

    def ours():
        return generate(model, ids, max_new_actions=N, eos_token_id=None, backspace_id=bksp, do_sample=False,
                        steer=steer)

    def recompute():
        return _recompute_on_backspace(model, prompts, N, steer, bksp)

    got = ours()
    if got.sequences != recompute():
        raise AssertionError("decode-backspace-vs-recompute: the two decoders disagree; the comparison is unfair")
    share = float(got.num_backspaces.sum()) / float(got.num_actions.sum())
    return SpeedCase(
        a=ours, b=recompute,
        a_name="seqlevel.decoding.generate (append-only cache, mask holes)",
        b_name="KV-cache decoder that recomputes from scratch on every backspace",
        description=f"greedy with {share:.0%} forced backspaces, {'tiny' if quick else 'small'} GPT-2 V={V}, "
                    f"batch {B}, prompt {ids.shape[1]}, {N} actions",
        sync=device_sync(device),
    )


def rollout_throughput(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """Batch 64 x 128 actions on small GPT-2: HF greedy ``generate`` without backspaces (A) vs our ``generate``
    with 20% forced backspaces (B). Both take the same number of actions per row (every action of ours, a
    ``<bksp>`` included, is one forward step and one cache slot, like a token of HF's), so ``a / b`` is our
    actions/s divided by HF's: above 1 ours is faster."""
    model, ids, V, B, N = _workload(device, quick, prompt_len=16, batch=64)
    bksp = _unused_ids(model, ids, N)[-1]  # a backspace id HF's greedy rows never take
    hf = _hf_greedy(model, ids, N)
    steer = ForcedBackspaces(_schedule(B, N, 0.2, device), bksp)

    def ours():
        return generate(model, ids, max_new_actions=N, eos_token_id=None, backspace_id=bksp, do_sample=False,
                        steer=steer)

    got = ours()
    if int(got.num_actions.sum()) != B * N or int(hf()[:, ids.shape[1]:].numel()) != B * N:
        raise AssertionError("rollout-throughput: the two decoders took different numbers of actions")
    share = float(got.num_backspaces.sum()) / float(got.num_actions.sum())
    return SpeedCase(
        a=hf, b=ours,
        a_name="transformers model.generate(do_sample=False), no backspaces",
        b_name=f"seqlevel.decoding.generate, {share:.0%} forced backspaces",
        description=f"ratio = our actions/s ÷ HF's; greedy, {'tiny' if quick else 'small'} GPT-2 V={V}, batch {B}, "
                    f"prompt {ids.shape[1]}, {N} actions per row",
        sync=device_sync(device),
    )
