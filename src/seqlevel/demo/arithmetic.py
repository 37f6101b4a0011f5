"""Demo section (b): MLE vs BC vs SequenceMatch on add-or-subtract-in-base with noise, and repairs with <bksp>.

Calls the arithmetic benchmark (:func:`seqlevel.bench.arithmetic.run`): the same task, models and
training recipe, at a smaller size. The repair examples force a plausible wrong first answer character (the one a
carry or borrow error would produce) and let the SequenceMatch model continue greedily.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace

from seqlevel.demo.section import Section

NOISE = 0.25


def _config(quick: bool, workdir: str):
    from seqlevel.bench.arithmetic import QUICK

    # the paper's regime: one MLE-pretrained checkpoint, then each method fine-tunes a copy for the same steps
    out = os.path.join(workdir, "arith")
    if quick:
        return replace(QUICK, n_train=400, n_test=40, pretrain_steps=60, steps=40, bc_warmup_steps=20,
                       sample_every=8, noises=(NOISE,), seeds=(0,), output_dir=out)
    return replace(QUICK, n_train=1000, n_test=100, pretrain_steps=200, steps=150, bc_warmup_steps=50,
                   noises=(NOISE,), seeds=(0,), output_dir=out)


def _render(actions: list[int], tokenizer, backspace_id: int, eos_id: int) -> str:
    out = []
    for a in actions:
        if a == backspace_id:
            out.append("⌫")
        elif a == eos_id:
            break
        else:
            out.append(tokenizer.convert_ids_to_tokens(a))
    return "".join(out)


def repair_examples(trainer, tokenizer, problems, n: int = 4, seed: int = 0) -> list[dict]:
    """Force a wrong first answer character and show what the model does next (greedy)."""
    import torch

    from seqlevel.bench.arithmetic import decode_prompts
    from seqlevel.decoding.steer import ForceFirst
    from seqlevel.tasks.arithmetic import decode_answer, encode_problem, inject_wrong_first_digit

    rng = random.Random(f"demo-{seed}")
    probs = list(problems[:n])
    prompts = [encode_problem(p, tokenizer)[0] for p in probs]
    wrong_chars = [inject_wrong_first_digit(p, rng) for p in probs]
    wrong = torch.tensor([int(tokenizer.convert_tokens_to_ids(c)) for c in wrong_chars])
    out = decode_prompts(trainer, prompts, do_sample=False, seed=seed, steer=ForceFirst(wrong, trainer.ban))
    rows = []
    for p, c, acts, seq in zip(probs, wrong_chars, out.actions, out.sequences):
        final = decode_answer(seq, tokenizer)
        rows.append({"question": p.question, "answer": p.answer, "forced": c,
                     "actions": _render(acts, tokenizer, trainer.backspace_id, trainer.eos_id),
                     "final": final, "repaired": final == p.answer})
    return rows


def section_arithmetic(quick: bool, workdir: str) -> Section:
    from seqlevel.bench.arithmetic import run

    cfg = _config(quick, workdir)
    keep: dict = {}
    rows = run(cfg, keep=keep)["results"]
    test = keep["test"]  # the questions run() tested on
    examples = repair_examples(keep["trainer"], keep["tokenizer"], test)
    by = {r["method"]: r for r in rows}
    lines = [
        "## SequenceMatch on noisy arithmetic (add or subtract in base 2-16)",
        "",
        f"{cfg.n_train} training / {cfg.n_test} test questions, a {dict(cfg.model_overrides)['n_layer']}-layer "
        f"GPT-2 pretrained with MLE for {cfg.pretrain_steps} steps, then fine-tuned from that one checkpoint for "
        f"{cfg.steps} steps per method (seed 0; the paper's regime). `bc` and `sequencematch` train on "
        f"data where, with probability {NOISE} per position, a plausible wrong digit is inserted and then deleted "
        "with `<bksp>`; `mle` trains on clean data and has no `<bksp>`. Accuracy = exact match of sampled answers "
        "(temperature 1); recovery = share of answers whose forced wrong first digit the model deletes.",
        "",
        "| method | accuracy (sampled) | accuracy (greedy) | backspace rate | recovery rate | train s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['accuracy']:.3f} | {r['accuracy_greedy']:.3f} | {r['backspace_rate']:.3f} | "
                     f"{r['recovery_rate']:.3f} | {r['train_seconds']:.0f} |")
    sm, bc, mle = by["sequencematch"], by["bc"], by["mle"]
    verdict = ("higher than" if sm["accuracy"] > max(bc["accuracy"], mle["accuracy"]) else "not higher than")
    lines += ["", f"At this size SequenceMatch's accuracy is {verdict} BC's and MLE's "
                  f"({sm['accuracy']:.3f} vs {bc['accuracy']:.3f} and {mle['accuracy']:.3f}); the full benchmark "
                  "(`seqlevel bench arithmetic --pretrain-steps N`, numbers in docs/results.md) trains longer.", "",
              "Repairs (a wrong first digit is forced; ⌫ is `<bksp>`; greedy afterwards):", "", "```"]
    for e in examples:
        lines.append(f"{e['question']}  →  {e['forced']}{e['actions']}   final {e['final']!r} "
                     f"(correct {e['answer']!r}) {'repaired' if e['repaired'] else 'not repaired'}")
    lines += ["```", ""]
    headline = [("arithmetic accuracy: mle / bc / sequencematch",
                 f"{mle['accuracy']:.2f} / {bc['accuracy']:.2f} / {sm['accuracy']:.2f}"),
                ("arithmetic recovery rate (sequencematch)", f"{sm['recovery_rate']:.2f}")]
    return Section(title="arithmetic", markdown="\n".join(lines),
                   metrics={"results": rows, "examples": examples, "noise": NOISE, "steps": cfg.steps,
                            "headline": headline})
