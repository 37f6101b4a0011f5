"""Speed cases for the backtracking decoder (issue 4).

* ``decode-vs-hf``: :func:`seqlevel.decoding.generate` with a backspace id the model never chooses (A) against
  Hugging Face ``model.generate`` (B), greedy, same model and prompts, same number of new tokens. The outputs are
  checked to be identical when the case is built, so both do the same work.
* ``decode-backspace-vs-recompute``: ``generate`` with ~20% backspaces (A) against a decoder that keeps an ordinary
  KV cache for token steps but, because ``DynamicCache.crop`` trims every row alike, recomputes the batch's live
  states from scratch whenever a row backspaces (B). Both follow the same forced backspace schedule, greedy
  otherwise, so they take identical actions (checked when the case is built).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from seqlevel.bench.speed import SpeedCase
from seqlevel.decoding import force_action, generate
from seqlevel.presets import tiny_model


def _sync_for(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _setup(device: str, quick: bool, prompt_len: int):
    V, B, N = (256, 4, 16) if quick else (2048, 16, 128)
    model = tiny_model("tiny-gpt2" if quick else "small-gpt2", vocab_size=V, seed=0).to(device).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, prompt_len), generator=g).to(device)
    return model, ids, V, B, N


def decode_vs_hf(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """Greedy, batch 16 x 128 new tokens on small GPT-2: ``generate`` with an unused ``<bksp>`` vs HF generate."""
    model, ids, V, B, N = _setup(device, quick, prompt_len=16)
    am = torch.ones_like(ids)

    def hf():
        return model.generate(input_ids=ids, attention_mask=am, do_sample=False, max_new_tokens=N,
                              eos_token_id=eos, pad_token_id=pad)

    # backspace/eos ids the greedy trajectories never take, so both decoders do exactly N steps of the same work
    eos, pad = None, 0
    model.generation_config.eos_token_id = None
    unused = sorted(set(range(V)) - set(hf()[:, ids.shape[1]:].flatten().tolist()))
    bksp, eos = unused[-1], unused[-2]

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
        sync=_sync_for(device),
    )


class _ForcedBackspaces:
    """Steer: greedy, except that row b must backspace at step t where ``schedule[b, t]`` (fixed, ~20%)."""

    needs_hidden_states = False

    def __init__(self, schedule: torch.Tensor, backspace_id: int):
        self.schedule, self.backspace_id = schedule, backspace_id

    def __call__(self, scores, ctx):
        forced = self.schedule[ctx.rows, ctx.step]
        scores = scores.clone()
        scores[:, self.backspace_id] = float("-inf")  # the model itself never backspaces ...
        return force_action(scores, forced, self.backspace_id)  # ... only where the schedule says so


@torch.no_grad()
def _recompute_on_backspace(model, prompts: list[list[int]], n_actions: int, steer: _ForcedBackspaces,
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
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
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
        out = model(input_ids=action[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache,
                    use_cache=True)
        logits = out.logits[:, -1].float()
    return [s[len(p):] for s, p in zip(live, prompts)]


def decode_backspace_vs_recompute(device: str = "cpu", quick: bool = False) -> SpeedCase:
    """Greedy with ~20% forced backspaces, batch 16 x 128 actions: ``generate`` vs recompute-on-backspace."""
    model, ids, V, B, N = _setup(device, quick, prompt_len=32)
    bksp = V - 1
    g = torch.Generator().manual_seed(1)
    schedule = (torch.rand(B, N, generator=g) < 0.2).to(device)  # (B, N) where each row must backspace
    steer = _ForcedBackspaces(schedule, bksp)
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
        sync=_sync_for(device),
    )
