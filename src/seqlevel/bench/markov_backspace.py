"""``seqlevel bench markov-backspace``: does ``<bksp>`` cut compounding error where the truth is known?

The bigram world of :mod:`seqlevel.tasks.markov` (true P, about half of the transitions forbidden), learned by a
small causal transformer over the whole history (it can carry state, unlike the bigram MLP of ``bench markov``).
Per seed, all on the same data:

* ``mle``: clean data, no ``<bksp>``, ``pretrain_steps`` steps;
* ``bc``: MLE on data with ground-truth noise (after token ``t`` a token ``u`` with ``P(u | t) = 0`` is inserted
  and deleted by ``<bksp>``, so noise states are never data states), ``pretrain_steps`` steps;
* ``bc_continued``: ``bc`` trained on for ``finetune_steps`` more steps (the control of the fine-tunes below);
* ``sequencematch``: ``bc``'s checkpoint fine-tuned ``finetune_steps`` steps with ``(1 − w)·BC + w·SM`` on
  the model's own rollouts (Algorithm 1 without warm-up);
* ``tv``: the same with ``divergence="tv"`` (φ linear, no ``r²`` terms: γ-weighted BC on data and rollouts' value
  term only), the control that shows what the χ² terms add.

Every metric is on the *final text after backspaces* of ``n_samples`` model samples (see
:func:`seqlevel.tasks.markov_backspace.final_text_metrics`), plus the token-only dev NLL (``<bksp>`` removed from
the softmax, a proper score) and the exact forbidden mass along the model's own rollouts. The trainer's default
learning rate (5e-5) barely moves a small model from scratch, so the bench sets its own (``lr``,
``finetune_lr``); every run records its training curve (dev token NLL every ``eval_every`` steps).

``run(cfg)`` returns (and ``--json`` prints) ``{"results": [{"method", "seed", "impossible_rate", "impossible_seq_rate", "token_nll",
"false_deletion_rate", "avg_js", "avg_zero_mass", "backspace_rate", "seconds", ...}], "summary": [...],
"config": {...}, "seconds"}``.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field, fields, replace

import torch

from seqlevel.bench import progress

METHODS = ("mle", "bc", "bc_continued", "sequencematch", "tv")


@dataclass
class Config:
    """One configuration of the benchmark (``--quick`` and the default are instances)."""

    vocab_size: int = 21
    """V of the Markov world (PAD/BOS + tokens + EOS), as in ``bench markov``."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """World and training seeds (one world per seed)."""
    methods: tuple[str, ...] = METHODS
    """Subset of mle, bc, bc_continued, sequencematch, tv."""
    n_train: int = 10_000
    """Training sequences drawn from P (those longer than ``max_tokens`` are dropped)."""
    n_dev: int = 1_000
    """Dev sequences for the token-only NLL."""
    max_tokens: int = 32
    """Longest sequence kept (EOS included): the world conditioned on length ≤ max_tokens."""
    p_noise: float = 0.1
    """Noise insertion probability per data action (bc and the fine-tunes)."""
    noise_coverage: float = 1.0
    """Share of the forbidden pairs (t, u) the ground-truth noise may insert: a fixed random subset per world seed
    (1.0: every pair). The uncovered pairs are errors only the model's own rollouts can show."""
    probe_prefixes: int = 400
    """Dev prefixes of the exact deletion probe (p_bksp_uncovered / covered / valid)."""
    n_layer: int = 2
    """Transformer layers of the model (GPT-2 preset, 4 heads)."""
    n_embd: int = 64
    """Model width."""
    pretrain_steps: int = 2000
    """Optimizer steps of mle and bc."""
    finetune_steps: int = 800
    """Optimizer steps of bc_continued, sequencematch and tv from bc's checkpoint."""
    batch_size: int = 32
    """Sequences per optimizer step."""
    lr: float = 3e-3
    """Peak learning rate of the from-scratch runs (linear warm-up, then constant)."""
    finetune_lr: float = 1e-3
    """Constant learning rate of the fine-tunes."""
    sm_weight: float = 0.5
    """Convex weight w of SM in the sequencematch and tv fine-tunes."""
    chi2_weight: float = 0.01
    """c of the χ² divergence φ(r) = r − c·r² (SequenceMatchConfig.chi2_weight)."""
    gamma: float = 0.998
    """Discount γ of the SequenceMatch occupancies."""
    eos_handling: str = "absorbing"
    """How <eos> ends a sequence in the SequenceMatch loss (SequenceMatchConfig.eos_handling)."""
    occupancy_normalize: bool = True
    """Normalise the occupancy weights per sequence (SequenceMatchConfig.occupancy_normalize)."""
    sample_every: int = 4
    """Optimizer steps between refreshes of the rollout buffer."""
    rollouts_per_refresh: int = 32
    """Model rollouts generated per refresh."""
    replay_batch_size: int = 16
    """Rollouts replayed in each optimizer step."""
    replay_buffer_size: int = 256
    """Rollouts kept in the replay buffer."""
    max_new_actions: int = 48
    """Cap on actions per rollout and per evaluation sample."""
    n_samples: int = 4000
    """Model samples scored per run (a converged BC model's impossible rate is ~0.1% per token)."""
    eval_every: int = 500
    """Steps between points of the training curve (dev token NLL)."""
    threads: int = 1
    """torch CPU threads."""
    extra: dict = field(default_factory=dict)
    """Extra SequenceMatchConfig fields for the sequencematch fine-tune (pilots)."""

    def __post_init__(self):
        if self.vocab_size < 4:
            raise ValueError(f"vocab_size must be >= 4 (PAD, two tokens, EOS), got {self.vocab_size}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ValueError(f"methods: unknown {bad}; choose from {','.join(METHODS)}")
        if not 0.0 <= self.noise_coverage <= 1.0:
            raise ValueError(f"noise_coverage must be in [0, 1], got {self.noise_coverage}; 1.0 is every forbidden "
                             "pair, 0.5 a fixed random half")
        if not self.seeds or not self.methods:
            raise ValueError("seeds and methods need at least one value each, e.g. --seeds 0 --methods mle,bc")


QUICK = Config(seeds=(0,), n_train=2000, n_dev=300, pretrain_steps=300, finetune_steps=100, n_samples=400,
               eval_every=100, n_embd=32, rollouts_per_refresh=16)


def _model(cfg: Config, tok, seed: int):
    from seqlevel.presets import tiny_model

    return tiny_model("tiny-gpt2", tokenizer=tok, seed=seed, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=4,
                      n_positions=cfg.max_tokens * 3 + 8, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _curve_callback(cfg: Config, p, dev, tok, curve: list, covered=None, probe_curve: list | None = None):
    from transformers import TrainerCallback

    from seqlevel.tasks.markov_backspace import deletion_probe, token_nll

    class Curve(TrainerCallback):
        def __init__(self):
            self.trainer = None

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % cfg.eval_every == 0 or state.global_step == state.max_steps:
                t = self.trainer
                bk = t.backspace_id if t.args.use_backspace else None
                curve.append([state.global_step, token_nll(t.model, p, dev, tok, bk, cfg.max_tokens)])
                if probe_curve is not None and bk is not None:
                    pr = deletion_probe(t.model, p, dev, tok, bk, covered, cfg.max_tokens, cfg.probe_prefixes)
                    probe_curve.append([state.global_step, pr["p_bksp_uncovered"], pr["p_bksp_covered"],
                                        pr["p_bksp_valid"]])

    return Curve()


def _train(cfg: Config, model, tok, ds, p, dev, seed: int, *, steps: int, lr: float, schedule: str, noise: bool,
           sm_weight: float = 0.0, divergence: str = "chi2_mix", extra: dict | None = None, out: str,
           covered=None, probe_curve: list | None = None):
    from transformers import PrinterCallback

    from seqlevel.tasks.markov_backspace import forbidden_noise
    from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer

    args = SequenceMatchConfig(
        output_dir=out, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, seed=seed,
        max_steps=steps, per_device_train_batch_size=cfg.batch_size, learning_rate=lr, lr_scheduler_type=schedule,
        warmup_steps=min(100, steps // 10) if schedule != "constant" else 0, weight_decay=0.0,
        logging_steps=max(steps // 5, 1), use_backspace=noise, p_noise=cfg.p_noise if noise else 0.0,
        noise_type="task", bc_warmup_steps=0 if sm_weight > 0 else steps, sm_weight=sm_weight,
        divergence=divergence, gamma=cfg.gamma, chi2_weight=cfg.chi2_weight, eos_handling=cfg.eos_handling,
        occupancy_normalize=cfg.occupancy_normalize, sample_every=cfg.sample_every,
        rollouts_per_refresh=cfg.rollouts_per_refresh, replay_batch_size=cfg.replay_batch_size,
        replay_buffer_size=cfg.replay_buffer_size, max_new_actions=cfg.max_new_actions, max_length=cfg.max_tokens + 1,
        dataloader_drop_last=True, **(extra or {}))
    curve: list = []
    cb = _curve_callback(cfg, p, dev, tok, curve, covered, probe_curve)
    trainer = SequenceMatchTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                   noise_fn=forbidden_noise(p, int(tok.eos_token_id), covered),
                                   callbacks=[cb, progress.StepCallback()])
    cb.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train()
    return trainer, curve, time.perf_counter() - t0


def _evaluate(cfg: Config, trainer, p, dev, tok, seed: int, covered=None) -> dict:
    from seqlevel.decoding import generate
    from seqlevel.tasks.markov_backspace import ForbiddenMass, deletion_probe, final_text_metrics, token_nll

    model = trainer.model
    model.eval()
    bk = trainer.backspace_id if trainer.args.use_backspace else None
    eos = int(tok.eos_token_id)
    mass = ForbiddenMass(p, eos, inner=trainer.ban)
    actions = []
    chunk = 500
    for i in range(0, cfg.n_samples, chunk):
        n = min(chunk, cfg.n_samples - i)
        ids = torch.full((n, 1), int(tok.bos_token_id), dtype=torch.long)
        out = generate(model, ids, torch.ones_like(ids), max_new_actions=cfg.max_new_actions, eos_token_id=eos,
                       backspace_id=bk, do_sample=True, temperature=1.0, seed=10_000 * seed + i, steer=mass)
        actions += out.actions
    m = final_text_metrics(p, actions, eos, bk, covered)
    m["token_nll"] = token_nll(model, p, dev, tok, bk, cfg.max_tokens)
    m["forbidden_mass"] = mass.mean
    if bk is not None:
        m.update(deletion_probe(model, p, dev, tok, bk, covered, cfg.max_tokens, cfg.probe_prefixes))
    else:
        m.update({"p_bksp_uncovered": None, "p_bksp_covered": None, "p_bksp_valid": None})
    return m


def world(cfg: Config, seed: int) -> dict:
    """The seed's world and data: ``p``, ``train``, ``dev``, ``tok``, ``ds`` (the training dataset) and
    ``covered`` (the pairs the noise may insert, :func:`seqlevel.tasks.markov_backspace.covered_pairs`)."""
    import datasets

    from seqlevel.tasks.markov import make_world
    from seqlevel.tasks.markov_backspace import covered_pairs, dataset_columns, markov_tokenizer

    p, train, dev = make_world(cfg.vocab_size, seed, train_size=cfg.n_train, dev_size=cfg.n_dev)
    tok = markov_tokenizer(p)
    ds = datasets.Dataset.from_dict(dataset_columns(p, train, tok, cfg.max_tokens))
    return {"p": p, "train": train, "dev": dev, "tok": tok, "ds": ds, "seed": seed,
            "covered": covered_pairs(p, cfg.noise_coverage, seed)}


def pretrain(cfg: Config, w: dict, method: str, out_dir: str):
    """``mle`` (clean data, no ``<bksp>``) or ``bc`` (ground-truth noise) from scratch; returns
    ``(trainer, curve, probe_curve, seconds)``."""
    probe_curve: list = []
    t, curve, s = _train(cfg, _model(cfg, w["tok"], w["seed"]), w["tok"], w["ds"], w["p"], w["dev"], w["seed"],
                         steps=cfg.pretrain_steps, lr=cfg.lr, schedule="constant_with_warmup", noise=method == "bc",
                         out=f"{out_dir}/{method}", covered=w["covered"], probe_curve=probe_curve)
    return t, curve, probe_curve, s


def finetune(cfg: Config, w: dict, bc_model, out_dir: str, *, sm_weight: float, divergence: str = "chi2_mix",
             extra: dict | None = None, overrides: dict | None = None):
    """A copy of ``bc_model`` fine-tuned ``finetune_steps`` steps with ``(1 − w)·BC + w·SM`` (``sm_weight`` 0:
    BC continued); ``overrides`` replaces fields of ``cfg`` for this run only (chi2_weight, eos_handling, ...).
    Returns ``(trainer, curve, probe_curve, seconds)``."""
    cfg = replace(cfg, **(overrides or {}))  # this fine-tune's own settings (the screen's rows)
    probe_curve: list = []
    t, curve, s = _train(cfg, copy.deepcopy(bc_model), w["tok"], w["ds"], w["p"], w["dev"], w["seed"],
                         steps=cfg.finetune_steps, lr=cfg.finetune_lr, schedule="constant", noise=True, out=out_dir,
                         sm_weight=sm_weight, divergence=divergence, extra=extra, covered=w["covered"],
                         probe_curve=probe_curve)
    return t, curve, probe_curve, s


def evaluate(cfg: Config, w: dict, trainer) -> dict:
    """The final-text metrics, token-only dev NLL, forbidden mass and deletion probe of a trained model."""
    return _evaluate(cfg, trainer, w["p"], w["dev"], w["tok"], w["seed"], w["covered"])


def run_seed(cfg: Config, seed: int, out_dir: str) -> list[dict]:
    """All methods of one seed (one world)."""
    w = world(cfg, seed)
    rows, bc_model = [], None
    need_bc = any(m in cfg.methods for m in ("bc", "bc_continued", "sequencematch", "tv"))

    def record(method, trainer, curve, probe_curve, seconds):
        m = evaluate(cfg, w, trainer)
        row = {"method": method, "seed": seed, **m, "seconds": seconds, "curve": curve, "probe_curve": probe_curve}
        progress.note(f"seed {seed} {method}: impossible {m['impossible_rate']:.4f}")
        rows.append(row)

    if "mle" in cfg.methods:
        record("mle", *pretrain(cfg, w, "mle", out_dir))
    if need_bc:
        t, curve, probe_curve, s_bc = pretrain(cfg, w, "bc", out_dir)
        bc_model = t.model
        if "bc" in cfg.methods:
            record("bc", t, curve, probe_curve, s_bc)
    fine = {"bc_continued": dict(sm_weight=0.0), "sequencematch": dict(sm_weight=cfg.sm_weight, extra=cfg.extra),
            "tv": dict(sm_weight=cfg.sm_weight, divergence="tv")}
    for method, kw in fine.items():
        if method not in cfg.methods:
            continue
        t, curve, probe_curve, s = finetune(cfg, w, bc_model, f"{out_dir}/{method}", **kw)
        record(method, t, curve, probe_curve, s + s_bc)
    return rows


KEYS = ("impossible_rate", "covered_rate", "uncovered_rate", "impossible_seq_rate", "token_nll", "false_deletion_rate", "avg_js", "avg_zero_mass",
        "backspace_rate", "backspace_precision", "forbidden_mass", "p_bksp_uncovered", "p_bksp_covered", "p_bksp_valid")


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and standard error over seeds per method."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        g = [r for r in rows if r["method"] == method]
        s = {"method": method, "seeds": len(g)}
        for k in KEYS:
            xs = [r[k] for r in g if r.get(k) is not None]
            if not xs:  # e.g. the probe of mle (no <bksp>), or p_bksp_uncovered at coverage 1.0
                s[k], s[k + "_se"] = None, None
                continue
            s[k] = statistics.mean(xs)
            s[k + "_se"] = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0
        out.append(s)
    return out


def total_steps(cfg: Config) -> int:
    """Optimizer steps of all runs of ``cfg`` (the progress bar's total)."""
    pre = ("mle" in cfg.methods) + any(m in cfg.methods for m in METHODS[1:])  # mle and the bc every other needs
    fine = sum(m in cfg.methods for m in ("bc_continued", "sequencematch", "tv"))
    return len(cfg.seeds) * (pre * cfg.pretrain_steps + fine * cfg.finetune_steps)


def run(cfg: Config) -> dict:
    """Every seed and method of ``cfg``; returns ``{"results": [...], "summary": [...], "config": {...},
    "seconds"}`` and prints nothing but a progress bar."""
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    rows = []
    with progress.bar("markov-backspace", total=total_steps(cfg)), \
            tempfile.TemporaryDirectory(prefix="seqlevel-markov-bksp-") as tmp:  # save_strategy="no": nothing kept
        for seed in cfg.seeds:
            rows += run_seed(cfg, seed, f"{tmp}/{seed}")
    cfg_json = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    return {"results": rows, "summary": summarize(rows), "config": cfg_json, "seconds": time.perf_counter() - t0}


def format_result(result: dict) -> str:
    """The summary table (mean ± standard error over seeds); uncovered / covered split and the deletion probe."""
    def f(s, k, w=7, d=4):
        return f"{s[k]:{w}.{d}f}" if s.get(k) is not None else f"{'-':>{w}}"

    lines = [f"{'method':>14} {'impossible':>18} {'uncovered':>9} {'covered':>9} {'token nll':>16} {'bksp':>7} "
             f"{'false del':>9} {'p⌫ unc':>7} {'p⌫ cov':>7} {'p⌫ valid':>8}"]
    for s in result["summary"]:
        lines.append(f"{s['method']:>14} {s['impossible_rate']:.5f}±{s['impossible_rate_se']:.5f} "
                     f"{f(s, 'uncovered_rate', 9, 5)} {f(s, 'covered_rate', 9, 5)} "
                     f"{s['token_nll']:.4f}±{s['token_nll_se']:.4f} {s['backspace_rate']:7.4f} "
                     f"{s['false_deletion_rate']:9.3f} {f(s, 'p_bksp_uncovered')} {f(s, 'p_bksp_covered')} "
                     f"{f(s, 'p_bksp_valid', 8)}")
    lines.append(f"total {result['seconds']:.0f} s")
    return "\n".join(lines)
