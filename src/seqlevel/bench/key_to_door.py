"""``seqlevel bench key-to-door``: jointly trained CAT vs BC, %BC and random on Key-to-Door (DT Table 6, CAT §3.1).

Per seed: 10,000 uniform-random trajectories (:func:`seqlevel.tasks.key_to_door.random_trajectories`), the paper's
data budget, and 2,000 *fresh* held-out ones (another seed) for evaluation during training. Three models of the same
trunk (GPT-2, ``--n-layer`` x ``--n-embd``, the same ``--context-window``), trained for the same number of optimizer
steps with :class:`~seqlevel.trainers.AttributeTrainer` and selected the same way (``load_best_model_at_end`` on
``--select``, evaluated ``--evals`` times):

* **CAT** (the headline, ``win_rate.cat``): one jointly trained model, ``CE + λ·L_attr`` on all trajectories with
  win/loss as a binary attribute, played greedily with the product rule ``p(a)·P(win | a)^α`` over the four action
  tokens (α large = one-step policy improvement on the behaviour values);
* **CAT refit** (optional, ``--head-refit-steps``, ``win_rate.cat_refit``): the same trunk with a fresh head fitted
  on its frozen states (:mod:`seqlevel.attributes.refit`); a tool, not the published method;
* **BC**: ``λ = 0`` on all trajectories, greedy; **%BC**: ``λ = 0`` on the successful trajectories only (≈3%),
  greedy; **random**: uniform actions.

Honest measurement beside the win rates (``per_seed``):

* ``heldout_bce``: at every evaluation, CAT's binary cross-entropy of the win label at the realised action over
  all held-out key-room decisions (key not yet held), next to three references on the same decisions
  (``heldout_bce_reference``): the best constant, the exact state value ``V^β(s)`` alone and the exact ``Q^β(s, a)``
  (:func:`~seqlevel.tasks.key_to_door.behaviour_action_values`). A model that has learned the action effect sits
  below the state-value line.
* ``agreement``: over the same decisions, the share where the played policy's action is a best action under the
  exact ``Q^β``, next to the best constant action's share (``agreement_constant``).
* ``exact_q_greedy``: greedy play on the exact ``Q^β`` (the ceiling of CAT's one-step improvement; 1.0 here).

``--context-window`` W is :attr:`AttributeHeadConfig.context_window`: a banded attention mask applied in the
model's forward, identically in training, evaluation and play. With W = 1 each position sees only its own token and
position id, which in the key room is exactly the Markov state (agent cell x key cell, time step).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from seqlevel.attributes import AttributeModel
from seqlevel.attributes.head import AttributeHead
from seqlevel.attributes.steering import ProductRule
from seqlevel.bench import progress
from seqlevel.decoding import StepContext
from seqlevel.tasks import key_to_door as ktd

SELECT = ("agreement", "val_win_rate", "attribute_loss", "last")
MODELS = ("cat", "bc", "pct_bc")


@dataclass
class Config:
    """Settings of the Key-to-Door bench (the defaults are the acceptance run)."""

    seeds: list[int] = field(default_factory=lambda: [0])
    """training/evaluation seeds"""
    episodes: int = 1000
    """evaluation episodes per policy (fresh layouts, seed 10,000 + seed)"""
    train_size: int = 10_000
    """random trajectories to train on (the paper's budget: 10,000)"""
    heldout_size: int = 2_000
    """fresh random trajectories (seed 20,000 + seed) for held-out losses and decision metrics"""
    val_episodes: int = 200
    """episodes (layout seed 30,000 + seed) for the validation win rate logged at each evaluation"""
    epochs: float = 12.0
    """epochs of CAT over the training data (24: 0.956 ± 0.020 over seeds 0-4, every seed but one ≥ 0.90;
    docs/results.md, issue 22)"""
    bc_epochs: float = 2.0
    """epochs of BC (it fits the uniform data policy within one)"""
    pct_bc_epochs: float = 100.0
    """epochs of %BC over the ≈315 successful trajectories (≈490 steps)"""
    attribute_lambda: float = 10.0
    """λ of the CAT model"""
    alpha: float = 16.0
    """α of the CAT product rule"""
    context_window: int | None = 1
    """W of the trunk (banded attention; None or 0 = full causal), the same for all three models"""
    n_layer: int = 2
    """trunk layers"""
    n_embd: int = 64
    """trunk width"""
    dropout: float = 0.0
    """dropout of the trunk (embeddings, residuals, attention); 0 also makes a step ~20% cheaper on CPU"""
    batch_size: int = 64
    """sequences per optimizer step"""
    learning_rate: float = 3e-3
    """AdamW peak learning rate (cosine schedule)"""
    head_learning_rate: float | None = None
    """learning rate of CAT's attribute head (None: learning_rate)"""
    head_rank: int = 16
    """rank of the factorised attribute head"""
    dueling: bool = False
    """CAT's head is a dueling head: state value + advantage centred over the four action tokens
    (AttributeHeadConfig.dueling)"""
    evals: int = 12
    """evaluations (and checkpoints) during training, for each model (with the default epochs: once per CAT epoch)"""
    select: str = "val_win_rate"
    """model selection for all three models: agreement | val_win_rate | attribute_loss | last"""
    head_refit_steps: int = 0
    """> 0: also report a head refitted on the frozen CAT trunk (win_rate.cat_refit)"""
    quick: bool = False
    """tiny configuration for tests (no acceptance numbers)"""
    model_dir: str | None = None
    """also save the CAT model of the first seed here"""
    models: list[str] = field(default_factory=lambda: list(MODELS))
    """which of cat, bc, pct_bc to train and play (e.g. only cat when comparing CAT settings: BC and %BC do not
    depend on CAT's epochs, λ, α or head)"""

    def __post_init__(self):
        if self.context_window == 0:
            self.context_window = None  # the command line's spelling of full causal attention
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {SELECT}, got {self.select!r}")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.episodes < 1 or self.train_size < 1 or self.heldout_size < 1 or self.evals < 1:
            raise ValueError(f"episodes, train_size, heldout_size and evals must be >= 1, got {self.episodes}, "
                             f"{self.train_size}, {self.heldout_size}, {self.evals}")
        if self.head_refit_steps < 0:
            raise ValueError(f"head_refit_steps must be >= 0, got {self.head_refit_steps}; 0 = no refit row")
        if self.context_window is not None and self.context_window < 1:
            raise ValueError(f"context_window must be >= 1 or None (full causal), got {self.context_window}")
        if not self.models or not set(self.models) <= set(MODELS):
            raise ValueError(f"models must be a non-empty subset of {MODELS}, got {self.models}")
        if self.head_refit_steps and "cat" not in self.models:
            raise ValueError("head_refit_steps > 0 refits CAT's head: add cat to models or set head_refit_steps 0")


# -- evaluation -------------------------------------------------------------------------------------------------
def _bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def bce_references(dec: ktd.Decisions) -> dict:
    """Held-out decision BCE of the best constant, the exact state value alone and the exact ``Q^β``."""
    q = dec.exact_q()
    y = dec.label.astype(float)
    return {"constant": _bce(np.full(len(y), y.mean()), y), "state_value": _bce(q.mean(1), y),
            "exact_q": _bce(q[np.arange(len(y)), dec.action], y)}


def _agreement(scores: np.ndarray, q: np.ndarray) -> float:
    """Share of decisions whose argmax action is a best action under ``q`` (ties count as agreement)."""
    best = q.max(1) - 1e-12
    return float((q[np.arange(len(q)), scores.argmax(1)] >= best).mean())


def constant_agreement(dec: ktd.Decisions) -> float:
    """Agreement of the best single action played everywhere."""
    q = dec.exact_q()
    return max(_agreement(np.eye(4)[np.full(len(q), a)], q) for a in range(4))


@torch.no_grad()
def decision_scores(model: AttributeModel, tokens: list[list[int]], dec: ktd.Decisions,
                    chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """``(log p(a), P(win | a))``, each ``(N, 4)``, at the decisions (one forward on the key-room prefixes)."""
    L = ktd.KEY_ROOM_PREFIX
    ids = torch.tensor([(s + [ktd.PAD] * L)[:L] for s in tokens])  # decisions sit inside the first L tokens
    mask = torch.tensor([[1] * min(len(s), L) + [0] * max(L - len(s), 0) for s in tokens])
    logp, attr = [], []
    seq, pos = torch.as_tensor(dec.seq), torch.as_tensor(dec.pos)
    for lo in range(0, len(tokens), chunk):
        out = model(ids[lo:lo + chunk], mask[lo:lo + chunk])
        sel = (seq >= lo) & (seq < lo + chunk)
        h = out.hidden[seq[sel] - lo, pos[sel]]  # (n, d)
        lg = out.logits[seq[sel] - lo, pos[sel]][:, ktd.ACTION_IDS].float()
        logp.append(lg.log_softmax(-1))
        if model.kind == "binary":
            attr.append(model.head.all_candidates(h)[:, ktd.ACTION_IDS, 0].float().sigmoid())
    lp = torch.cat(logp).numpy()
    return lp, (torch.cat(attr).numpy() if attr else np.zeros_like(lp))


def decision_metrics(model: AttributeModel, tokens, dec: ktd.Decisions, *, steered: bool, alpha: float,
                     val_episodes: int = 0, val_seed: int = 0) -> dict:
    """Held-out decision BCE (the head at the realised action), the played policy's agreement with ``Q^β``, the
    head's own argmax agreement, and (``val_episodes`` > 0) a validation win rate on separate layouts."""
    logp, p_win = decision_scores(model, tokens, dec)
    q = dec.exact_q()
    policy = logp + alpha * np.log(np.clip(p_win, 1e-12, 1)) if steered else logp
    m = {"agreement": _agreement(policy, q)}
    if steered:
        m["decision_bce"] = _bce(p_win[np.arange(len(q)), dec.action], dec.label.astype(float))
        m["head_agreement"] = _agreement(p_win, q)
    if val_episodes:
        m["val_win_rate"] = play(model, val_episodes, val_seed, mode="cat" if steered else "greedy",
                                 alpha=alpha)["win_rate"]
    return m


class _LastPosition:
    """The model's outputs at the last position of a growing batch of histories, without re-running them.

    With a window W (over L layers) only the last ``L·(W − 1) + 1`` tokens reach the last position
    (:attr:`AttributeModel.receptive_field`): they are run with their own position ids and the model's banded mask,
    so W = 1 costs one token per step. With full causal attention the new tokens run on the KV cache of the earlier
    ones. ``full=True`` re-runs the whole history every step (the reference the test compares against)."""

    def __init__(self, model: AttributeModel, full: bool = False):
        self.model, self.full = model, full
        self.field = None if full else model.receptive_field
        self.cache, self.seen = None, 0

    def __call__(self, ids: torch.Tensor):
        """``ids (n, T)``: every history so far -> ``(logits (n, V), hidden (n, d))`` at position ``T - 1``."""
        n, T = ids.shape
        if self.full:
            out = self.model(ids)
        elif self.field is not None:
            lo = max(T - self.field, 0)
            out = self.model(ids[:, lo:], position_ids=torch.arange(lo, T).expand(n, -1))
        else:
            out = self.model(ids[:, self.seen:], cache=self.cache, use_cache=True)  # (n, new tokens)
            self.cache, self.seen = out.cache, T
        return out.logits[:, -1], out.hidden[:, -1]


@torch.no_grad()
def play(model: AttributeModel | None, episodes: int, seed: int, *, mode: str, alpha: float = 16.0,
         full_recompute: bool = False) -> dict:
    """Play ``episodes`` episodes; ``mode`` is ``cat`` (product rule, greedy), ``greedy``, ``sample`` or ``random``.

    Each step reads the model at the last position of the history, as a forward over the whole history would
    (its context window applies exactly as in training), but runs only the tokens that reach that position
    (:class:`_LastPosition`; ``full_recompute=True`` runs the whole history instead, for testing)."""
    env = ktd.KeyToDoor(episodes, seed)
    rng = np.random.default_rng(seed + 7)
    gen = torch.Generator().manual_seed(seed)
    n = episodes
    ids = torch.tensor(np.stack([np.full(n, ktd.BOS), env.key_tokens(), env.observation()], 1))
    rule = ProductRule(model, target=1, alpha=alpha) if mode == "cat" else None
    last = _LastPosition(model, full=full_recompute) if model is not None else None
    not_action = torch.ones(ktd.VOCAB_SIZE, dtype=torch.bool)
    not_action[ktd.ACTION_IDS] = False
    step = 0
    while not env.done.all():
        if mode == "random":
            a = rng.integers(0, 4, n)
        else:
            logits, hidden = last(ids)
            scores = logits.float().masked_fill(not_action, float("-inf"))  # (n, V)
            if rule is not None:
                ctx = StepContext(step=step, rows=torch.arange(n), live_lengths=torch.full((n,), ids.shape[1]),
                                  prompt_lengths=torch.full((n,), 3), tokens=ids, hidden_states=(hidden,),
                                  backspace_id=None, eos_token_ids=())
                scores = rule(scores, ctx).masked_fill(not_action, float("-inf"))
            if mode == "sample":
                choice = torch.multinomial(scores.softmax(-1), 1, generator=gen).squeeze(1)
            else:
                choice = scores.argmax(-1)
            a = (choice - ktd.ACTION0).numpy()
        obs, _ = env.step(a)
        # same token layout as the training data: no observation inside the empty room (all episodes are in step)
        in_room2 = bool((env.phase[~env.done] == 2).all()) if (~env.done).any() else False
        feed = torch.tensor((ktd.ACTION0 + a)[:, None] if in_room2 else np.stack([ktd.ACTION0 + a, obs], 1))
        ids = torch.cat([ids, feed], 1)
        step += 1
    wins = env.success
    shortest = float((env.steps_to_win[wins] == ktd.SHORTEST_WIN).mean()) if wins.any() else 0.0
    return {"win_rate": float(wins.mean()), "wins": int(wins.sum()), "shortest_path_share": shortest,
            "key_rate": float((env.key_step >= 0).mean())}


# -- training ---------------------------------------------------------------------------------------------------
def train(cfg: Config, data: ktd.Trajectories, heldout: ktd.Trajectories, dec: ktd.Decisions, seed: int, *,
          lam: float, steps: int, successes_only: bool = False) -> tuple[AttributeModel, list[dict]]:
    """One model of the bench; returns it (the selected checkpoint) and its evaluation log."""
    import datasets
    from transformers import PrinterCallback, TrainerCallback

    class _Progress(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            progress.note(f"step {state.global_step}: " + " ".join(
                f"{k[5:]}={v:.4f}" for k, v in metrics.items()
                if k in ("eval_val_win_rate", "eval_decision_bce", "eval_agreement")))

    from seqlevel.presets import tiny_model
    from seqlevel.trainers import AttributeConfig, AttributeTrainer
    from seqlevel.trainers.attribute import AttributeCollator

    keep = [i for i in range(len(data.tokens)) if data.success[i] or not successes_only]
    ds = datasets.Dataset.from_dict({"input_ids": [data.tokens[i] for i in keep],
                                     "attribute": [int(data.success[i]) for i in keep]})
    ev = datasets.Dataset.from_dict({"input_ids": heldout.tokens, "attribute": heldout.success.astype(int).tolist()})
    base = tiny_model("tiny-gpt2", vocab_size=ktd.VOCAB_SIZE, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=4,
                      seed=seed, bos_token_id=ktd.BOS, eos_token_id=ktd.EOS, pad_token_id=ktd.PAD,
                      resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout)
    steered = lam > 0
    every = max(steps // cfg.evals, 1)
    select = cfg.select != "last"
    metric = {"agreement": "agreement", "val_win_rate": "val_win_rate", "attribute_loss": "attribute_loss",
              "last": None}[cfg.select]
    if cfg.select == "attribute_loss" and not steered:
        metric = "lm_loss"  # BC / %BC have no head to score: their own held-out loss
    with tempfile.TemporaryDirectory(prefix="ktd_") as out_dir:
        args = AttributeConfig(
            output_dir=out_dir, report_to="none", max_steps=steps, per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=256, learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
            warmup_steps=min(50, steps // 10), logging_steps=every, use_cpu=True, seed=seed, disable_tqdm=True,
            attribute_kind="binary", attribute_lambda=lam, head_rank=cfg.head_rank, append_eos=False,
            head_learning_rate=cfg.head_learning_rate if steered else None,
            head_dueling=cfg.dueling and steered, head_dueling_candidates=ktd.ACTION_IDS if cfg.dueling and steered else None,
            max_length=128, head_query_std=0.5 if steered else 0.02, context_window=cfg.context_window,
            eval_strategy="steps", eval_steps=every, save_strategy="steps" if select else "no", save_steps=every,
            save_total_limit=2 if select else None, load_best_model_at_end=select,
            metric_for_best_model=metric, greater_is_better=metric in ("agreement", "val_win_rate"))
        tr = AttributeTrainer(
            base, args=args, train_dataset=ds, eval_dataset=ev, data_collator=AttributeCollator(ktd.PAD, "binary"),
            decision_metrics=lambda m: decision_metrics(
                m, heldout.tokens, dec, steered=steered, alpha=cfg.alpha,
                val_episodes=20 if cfg.quick else cfg.val_episodes, val_seed=30_000 + seed))
        tr.remove_callback(PrinterCallback)  # stdout carries only the --json result
        tr.add_callback(_Progress())
        tr.add_callback(progress.StepCallback())
        tr.train()
        log = [{k[5:]: v for k, v in e.items() if k.startswith("eval_")} | {"step": e["step"]}
               for e in tr.state.log_history if "eval_agreement" in e]
        return tr.model.eval(), log


def refit(model: AttributeModel, data: ktd.Trajectories, seed: int, steps: int, quick: bool) -> AttributeModel:
    """A fresh, wider head fitted on the frozen CAT trunk's states at the action decisions
    (:func:`seqlevel.attributes.refit.refit_head`); the trunk is shared with the joint model."""
    import copy

    from seqlevel.attributes.refit import refit_head

    torch.manual_seed(seed)
    model = copy.deepcopy(model)
    model.head = AttributeHead(dataclasses.replace(model.head.config, block_size=256, rank=32, query_std=0.5))
    refit_head(model, data.tokens, data.success.astype(int), candidate_ids=ktd.ACTION_IDS, steps=steps,
               batch_size=512 if quick else 8192, pad_id=ktd.PAD, seed=seed)
    return model.eval()


def run_seed(cfg: Config, seed: int) -> dict:
    """Train CAT, BC and %BC on one seed's data and play them; the per-seed record of the JSON result."""
    n_train = 300 if cfg.quick else cfg.train_size
    n_held = 100 if cfg.quick else cfg.heldout_size
    episodes = 20 if cfg.quick else cfg.episodes
    data = ktd.random_trajectories(n_train, seed)
    heldout = ktd.random_trajectories(n_held, 20_000 + seed)
    dec = ktd.key_room_decisions(heldout.tokens, heldout.success)
    n_succ = int(data.success.sum())
    steps = {name: 10 if cfg.quick else max(int(ep * n / cfg.batch_size), cfg.evals)
             for name, ep, n in (("cat", cfg.epochs, n_train), ("bc", cfg.bc_epochs, n_train),
                                 ("pct_bc", cfg.pct_bc_epochs, n_succ))}
    progress.grow(sum(v for k, v in steps.items() if k in cfg.models))
    ev = 10_000 + seed  # evaluation layouts differ from the training ones
    r: dict = {"data_success_rate": float(data.success.mean()), "heldout_decisions": int(len(dec.seq)),
               "heldout_bce_reference": bce_references(dec), "agreement_constant": constant_agreement(dec)}
    t0 = time.perf_counter()
    models, logs = {}, {}
    for name, lam, succ in (("cat", cfg.attribute_lambda, False), ("bc", 0.0, False), ("pct_bc", 0.0, True)):
        if name not in cfg.models:
            continue
        progress.note(f"seed {seed}: training {name}")
        models[name], logs[name] = train(cfg, data, heldout, dec, seed, lam=lam, steps=steps[name], successes_only=succ)
    r["train_seconds"] = time.perf_counter() - t0
    r["eval_log"] = logs
    t0 = time.perf_counter()
    if "cat" in models:
        r["heldout_bce"] = [e["decision_bce"] for e in logs["cat"]]
        if cfg.model_dir and seed == cfg.seeds[0]:
            models["cat"].save_pretrained(cfg.model_dir)
        r["cat"] = play(models["cat"], episodes, ev, mode="cat", alpha=cfg.alpha)
        r["cat"] |= decision_metrics(models["cat"], heldout.tokens, dec, steered=True, alpha=cfg.alpha)
    if cfg.head_refit_steps:
        ref = refit(models["cat"], data, seed, 20 if cfg.quick else cfg.head_refit_steps, cfg.quick)
        r["cat_refit"] = play(ref, episodes, ev, mode="cat", alpha=cfg.alpha)
        r["cat_refit"] |= decision_metrics(ref, heldout.tokens, dec, steered=True, alpha=cfg.alpha)
    for name in [m for m in ("bc", "pct_bc") if m in models]:
        r[name] = play(models[name], episodes, ev, mode="greedy")
        r[name] |= decision_metrics(models[name], heldout.tokens, dec, steered=False, alpha=cfg.alpha)
        r[name + "_sampled"] = play(models[name], episodes, ev, mode="sample")
    r["random"] = play(None, episodes, ev, mode="random")
    r["exact_q_greedy"] = ktd.play_behaviour_greedy(episodes, ev)
    r["eval_seconds"] = time.perf_counter() - t0
    progress.note(f"seed {seed}: " + " ".join(f"{k} {r[k]['win_rate']:.3f}" for k in MODELS if k in r))
    return r


def run(cfg: Config) -> dict:
    """Run the bench; returns the JSON-able result and prints nothing but a progress bar (optimizer steps of all
    models; playing adds a few seconds per seed)."""
    with progress.bar("key-to-door", total=0):
        per_seed = [run_seed(cfg, s) for s in cfg.seeds]
    rows = tuple(m for m in MODELS if m in cfg.models) + ("random",) + (("cat_refit",) if cfg.head_refit_steps else ())
    mean = lambda k: float(np.mean([r[k]["win_rate"] for r in per_seed]))  # noqa: E731
    sem = lambda k: float(np.std([r[k]["win_rate"] for r in per_seed], ddof=1) / np.sqrt(len(per_seed))  # noqa: E731
                          ) if len(per_seed) > 1 else 0.0
    return {
        "win_rate": {k: mean(k) for k in rows},
        "win_rate_sem": {k: sem(k) for k in rows},
        "episodes": 20 if cfg.quick else cfg.episodes,
        "seeds": list(cfg.seeds),
        "config": dataclasses.asdict(cfg),
        "sampled_win_rate": {k: mean(k + "_sampled") for k in ("bc", "pct_bc") if k in cfg.models},
        "exact_q_greedy_win_rate": mean("exact_q_greedy"),
        "heldout_bce_final": float(np.mean([r["cat"]["decision_bce"] for r in per_seed])) if "cat" in cfg.models
        else None,
        "heldout_bce_reference": {k: float(np.mean([r["heldout_bce_reference"][k] for r in per_seed]))
                                  for k in ("constant", "state_value", "exact_q")},
        "agreement": {k: float(np.mean([r[k]["agreement"] for r in per_seed])) for k in rows if k != "random"}
        | {"constant": float(np.mean([r["agreement_constant"] for r in per_seed]))},
        "cat_shortest_path_share": float(np.mean([r["cat"]["shortest_path_share"] for r in per_seed]))
        if "cat" in cfg.models else None,
        "per_seed": per_seed,
    }


def format_result(result: dict) -> str:
    """Win rates (mean ± s.e. over seeds), CAT's held-out decision BCE and each policy's agreement with Q^β."""
    w, s = result["win_rate"], result["win_rate_sem"]
    ref = result["heldout_bce_reference"]
    return (f"Key-to-Door, {result['episodes']} episodes x seeds {result['seeds']}: "
            + "  ".join(f"{k} {w[k]:.3f}±{s[k]:.3f}" for k in w)
            + (f"; held-out decision BCE of CAT {result['heldout_bce_final']:.4f}" if result["heldout_bce_final"]
               is not None else "; held-out decision BCE")
            + f" (constant {ref['constant']:.4f}, state value {ref['state_value']:.4f}, exact Q^β {ref['exact_q']:.4f})"
            "; agreement with Q^β "
            + ", ".join(f"{k} {v:.2f}" for k, v in result["agreement"].items()))
