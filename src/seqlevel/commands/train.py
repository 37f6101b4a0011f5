"""``seqlevel train``: the method's Config dataclass is the parser, so every option has one source.

The options are the fields of :class:`TrainScriptArguments` (what to train on what), of every
``transformers.TrainingArguments`` field, and of the method configs (``MixCEConfig``, ``SequenceMatchConfig``,
``AttributeConfig``), added by ``transformers.HfArgumentParser`` from the dataclasses themselves: the help text is
the field's ``help``, hyphen and underscore spellings both work, and a field added to a config is a flag at once.
``--config run.yaml`` (or ``.json``) gives the same options as a file; flags on the command line override it.

Only the options given (on the command line or in the file) reach the config, so each method keeps its own
defaults; an option of another method is refused (``--p-noise`` with ``--objective mixce``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field

from transformers import HfArgumentParser, TrainingArguments

from seqlevel.trainers.attribute import AttributeConfig
from seqlevel.trainers.mixce import OBJECTIVES as MIXCE_OBJECTIVES
from seqlevel.trainers.mixce import MixCEConfig
from seqlevel.trainers.sequencematch import SequenceMatchConfig

OBJECTIVES = (*MIXCE_OBJECTIVES, "sequencematch", "cat")
METHOD_CONFIGS: dict[str, type] = {**dict.fromkeys(MIXCE_OBJECTIVES, MixCEConfig),
                                   "sequencematch": SequenceMatchConfig, "cat": AttributeConfig}
# The flags of the first seqlevel CLI that are not spellings of a field name: kept so nobody's scripts break.
ALIASES = {"batch_size": "per_device_train_batch_size", "epochs": "num_train_epochs", "lr": "learning_rate",
           "grad_accum": "gradient_accumulation_steps"}
FROM_SCRATCH_LR = 1e-3  # presets start from random weights; 5e-5 (a fine-tuning rate) leaves them emitting noise
CLI_DEFAULTS = {"logging_steps": 10}  # the Trainer's 500 hides every loss of a short run


@dataclass
class TrainScriptArguments:
    """What to train on what: the options of ``seqlevel train`` that are not a config field."""

    model: str | None = field(default=None, metadata={
        "help": "Hugging Face model name or local path, or a preset trained from scratch: tiny-gpt2, tiny-llama, "
                "small-gpt2, small-llama (required)"})
    dataset: str | None = field(default=None, metadata={
        "help": "a .txt (one example per line), .jsonl/.json, .csv or .parquet file, a datasets.save_to_disk "
                "directory, or a Hub dataset name (online); records hold text, prompt + completion (loss on the "
                "completion only), messages (chat) or input_ids; with --objective sequencematch also 'arithmetic' "
                "(the paper's add-or-sub-in-base task); with --objective cat also an attribute column (required)"})
    objective: str = field(default="mixce", metadata={"help": " | ".join(OBJECTIVES)})
    tokenizer: str | None = field(default=None, metadata={
        "help": "tokenizer name/path; defaults to the model's, or a byte-level tokenizer for presets"})
    dataset_config: str | None = field(default=None, metadata={"help": "configuration of a Hub dataset"})
    dataset_split: str = field(default="train", metadata={"help": "split of a Hub dataset or DatasetDict directory"})
    eval_dataset: str | None = field(default=None, metadata={
        "help": "evaluation data, read like --dataset (use with --eval_strategy steps|epoch)"})
    config: str | None = field(default=None, metadata={
        "help": "a .yaml/.json file of options (keys are option names); flags given here override it"})
    resume: bool = field(default=False, metadata={"help": "resume from the last complete checkpoint in --output-dir"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "train into a non-empty --output-dir, overwriting its model (without it such a directory is refused)"})
    json: bool = field(default=False, metadata={"help": "print train_results.json as one JSON line at the end"})
    use_peft: bool = field(default=False, metadata={
        "help": "train a LoRA adapter (needs peft); <bksp> rows and the CAT head stay trainable; the merged model "
                "is saved"})
    lora_r: int = field(default=64, metadata={"help": "LoRA rank (SequenceMatch paper: 64)"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (SequenceMatch paper: 16)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "modules that get adapters (names, or all-linear)"})


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _groups() -> list[tuple[str, type, list[str]]]:
    """(title, dataclass, field names) for each group of options, in --help order; no name appears twice."""
    script, ta = _fields(TrainScriptArguments), _fields(TrainingArguments)
    method = {cls: [n for n in _fields(cls) if n not in ta and n not in script]
              for cls in (MixCEConfig, SequenceMatchConfig, AttributeConfig)}
    common = [n for n in method[MixCEConfig] if all(n in v for v in method.values())]
    seen = set(common)
    out = [("seqlevel train", TrainScriptArguments, list(script)),
           ("data and numerical guards (every objective)", MixCEConfig, common)]
    for title, cls in (("MixCE family (--objective mle | mixce | tailr | dft)", MixCEConfig),
                       ("SequenceMatch (--objective sequencematch)", SequenceMatchConfig),
                       ("CAT attribute model (--objective cat)", AttributeConfig)):
        names = [n for n in method[cls] if n not in seen and n != "objective"]
        seen.update(names)
        out.append((title, cls, names))
    out.append(("training (transformers.TrainingArguments; see its documentation)", TrainingArguments, list(ta)))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of every group (see :func:`_groups`), parsed by ``HfArgumentParser``'s field rules."""
    p.description = (f"{p.description or ''} Options come from the config dataclasses (help = the field's help); "
                     "hyphen and underscore spellings both work. Only options given reach the config.")
    for title, cls, names in _groups():
        group = p.add_argument_group(title)
        hints = typing.get_type_hints(cls)
        fields = _fields(cls)
        for name in names:
            f = _copy_field(fields[name], hints[name])
            HfArgumentParser._parse_dataclass_field(group, f)
    first: dict[str, argparse.Action] = {}
    for a in p._actions:
        first.setdefault(a.dest, a)  # a bool's --no_x shares its dest: keep --x, which has the type
    p.set_defaults(_actions=first)  # for typing the values of a --config file
    aliases = p.add_argument_group("aliases (the first seqlevel CLI's flags)")
    by_dest = {a.dest: a for a in p._actions}
    for alias, dest in ALIASES.items():
        target = by_dest[dest]
        aliases.add_argument(f"--{alias.replace('_', '-')}", dest=dest, type=target.type, action=_Alias,
                             help=f"same as --{dest.replace('_', '-')}")
    for a in p._actions:  # HfArgumentParser gives --no_x the help of --x, which says the opposite
        if a.option_strings and a.option_strings[0].startswith("--no_") and isinstance(a, argparse._StoreFalseAction):
            a.help = f"switch off --{a.dest.replace('_', '-')} (on by default: {a.help})"
    for a in p._actions:  # only options given on the command line appear in the namespace
        if a.dest in ("help", "version"):
            continue
        if a.help and a.default not in (None, argparse.SUPPRESS, [], "") and not a.dest.startswith("_") \
                and not a.option_strings[0].startswith("--no"):
            a.help = f"{a.help} (default: {a.default})"
        if a.help:
            a.help = a.help.replace("%", "%%")  # TrainingArguments' help has literal '%'
        a.default = argparse.SUPPRESS
        a.required = False  # checked after --config is merged in (see _options)


class _Alias(argparse._StoreAction):
    """An alias flag (``--batch-size``) that remembers it was given, so that it and its option
    (``--per-device-train-batch-size``) given with different values is an error, not "the last one wins"."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = dict(getattr(namespace, "_aliases_given", {}))
        if hasattr(namespace, self.dest) and getattr(namespace, self.dest) != values and self.dest not in given:
            given[self.dest] = (option_string, values, getattr(namespace, self.dest))  # the option came first
        else:
            given[self.dest] = (option_string, values, None)
        namespace._aliases_given = given
        setattr(namespace, self.dest, values)


def _check_aliases(args: argparse.Namespace) -> None:
    """Refuse an alias and its option given with different values (see :class:`_Alias`)."""
    for dest, (flag, value, before) in getattr(args, "_aliases_given", {}).items():
        other = before if before is not None else getattr(args, dest)
        if other != value:
            raise ValueError(f"{flag} {value} and --{dest.replace('_', '-')} {other} set the same option ({flag} "
                             "is an alias of it) to different values; pass one of them")


def _copy_field(f: dataclasses.Field, hint) -> dataclasses.Field:
    """A copy of ``f`` with its type resolved (HfArgumentParser rewrites ``field.type`` in place)."""
    g = dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=dict(f.metadata))
    g.name, g.type = f.name, hint
    return g


# ----- options: command line + --config file ------------------------------------------------------------------------
def _typed(name: str, value, action, path: str):
    """A --config value as the flag would have parsed it (YAML reads ``1e-3`` as a string, for one)."""
    convert = getattr(action, "type", None)
    if value is None or convert is None or isinstance(value, list):
        return value
    if isinstance(value, bool) and convert in (int, float):
        raise ValueError(f"--config {path!r}: option {name!r} must be a number, got {value!r}")
    try:
        return convert(str(value)) if isinstance(value, str) or convert in (int, float) else value
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise ValueError(f"--config {path!r}: option {name!r} has value {value!r}, which is not a valid "
                         f"{getattr(convert, '__name__', 'value')} ({e})") from e


def _read_config_file(path: str, known: set[str], actions: dict | None = None) -> dict:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path!r} not found; pass a .yaml or .json file of options")
    import json

    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"--config {path!r} is not valid YAML: {getattr(e, 'problem', None) or e}{where}") from e
    elif path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {path!r} is not valid JSON: {e}") from e
    else:
        raise ValueError(f"--config {path!r}: use a .yaml/.yml or .json file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path!r} holds a {type(data).__name__}; it must map option names to values")
    out = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        name = ALIASES.get(name, name)
        if name not in known:
            raise ValueError(f"--config {path!r}: unknown option {key!r}; use the names of `seqlevel train --help` "
                             "(e.g. learning_rate, per_device_train_batch_size, mixce_eta)")
        out[name] = _typed(name, value, (actions or {}).get(name), path)
    return out


def _options(args: argparse.Namespace) -> tuple[TrainScriptArguments, type, dict]:
    """The script arguments, the config class and the given config options (file < command line)."""
    _check_aliases(args)
    given = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    known = set(_fields(TrainScriptArguments)) | {n for c in set(METHOD_CONFIGS.values()) for n in _fields(c)}
    if given.get("config"):
        given = {**_read_config_file(given["config"], known, getattr(args, "_actions", None)), **given}
    script_names = _fields(TrainScriptArguments)
    script = TrainScriptArguments(**{k: given.pop(k) for k in list(given) if k in script_names})
    missing = [f"--{n.replace('_', '-')}" for n, v in (("model", script.model), ("dataset", script.dataset),
                                                       ("output_dir", given.get("output_dir"))) if not v]
    if missing:
        raise ValueError(f"the following arguments are required: {', '.join(missing)}")
    if script.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {script.objective!r}; choose one of {', '.join(OBJECTIVES)}")
    cls = METHOD_CONFIGS[script.objective]
    own = _fields(cls)
    foreign = [k for k in given if k not in own]
    if foreign:
        owners = {k: [o for o, c in METHOD_CONFIGS.items() if k in _fields(c)] for k in foreign}
        what = "; ".join(f"--{k.replace('_', '-')} is an option of --objective {' / '.join(v)}"
                         for k, v in owners.items())
        raise ValueError(f"{what}; it does nothing with --objective {script.objective}: drop it or change --objective")
    if cls is MixCEConfig:
        given["objective"] = script.objective
    return script, cls, given


# ----- running ------------------------------------------------------------------------------------------------------
def _resolve_lengths(script, cls, opts: dict, model, notes: list[str]) -> None:
    """Fit ``max_length`` to the model's context: an error when it was given too large, a printed note otherwise."""
    from seqlevel.data import context_length

    ctx = context_length(model)
    if ctx is None:
        return
    if "max_length" in opts:
        if int(opts["max_length"]) > ctx:
            raise ValueError(f"--max-length {opts['max_length']} exceeds the model's context of {ctx} positions; "
                             f"pass --max-length {ctx} or less")
        return
    default = _fields(cls)["max_length"].default
    if cls is SequenceMatchConfig and default > ctx // 2:
        # noise insertions (each undone by a <bksp>) lengthen a trajectory beyond its data tokens
        opts["max_length"] = ctx // 2
        notes.append(f"max_length {ctx // 2}: half the model's context of {ctx}, leaving room for noise and <bksp> "
                     "actions; longer examples are truncated")
    elif default > ctx:
        opts["max_length"] = ctx
        notes.append(f"max_length {ctx}: the model's context (the config's default {default} is longer); longer "
                     "examples are truncated")


def _check_sequencematch_steps(cfg, n_examples: int) -> None:
    if cfg.sm_weight == 0:
        return  # the BC baseline: warm-up is the whole run by design
    per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * max(cfg.world_size, 1)
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(n_examples / per_step) * cfg.num_train_epochs
    if steps <= cfg.bc_warmup_steps:
        raise ValueError(f"this run has {int(steps)} optimizer steps but bc_warmup_steps={cfg.bc_warmup_steps}: it "
                         "would never leave the behaviour-cloning warm-up, so SequenceMatch would not run; raise "
                         f"--max-steps above {cfg.bc_warmup_steps}, lower --bc-warmup-steps, or pass --sm-weight 0 "
                         "for the BC baseline on purpose")


def _peft_config(script, tok, model):
    if script.lora_r < 1:
        raise ValueError(f"--lora-r must be a positive integer (the LoRA rank), got {script.lora_r}; e.g. --lora-r 16 "
                         "(the SequenceMatch paper used 64)")
    if not script.lora_alpha > 0:
        raise ValueError(f"--lora-alpha must be > 0, got {script.lora_alpha}; e.g. --lora-alpha 16")
    if not 0.0 <= script.lora_dropout < 1.0:
        raise ValueError(f"--lora-dropout must be in [0, 1), got {script.lora_dropout}")
    try:
        from peft import LoraConfig
    except ImportError as e:
        raise ImportError("--use-peft needs the peft package: pip install 'seqlevel[peft]'") from e

    targets = script.lora_target_modules
    targets = targets[0] if len(targets) == 1 and targets[0] == "all-linear" else list(targets)
    kw = dict(r=script.lora_r, lora_alpha=script.lora_alpha, lora_dropout=script.lora_dropout,
              target_modules=targets)
    from seqlevel.backspace.vocab import BACKSPACE_TOKEN

    if script.objective != "sequencematch" and BACKSPACE_TOKEN in tok.get_vocab():
        from seqlevel.trainers.peft import backspace_lora_config

        return backspace_lora_config(model, tok.convert_tokens_to_ids(BACKSPACE_TOKEN), **kw)
    return LoraConfig(task_type="CAUSAL_LM", **kw)  # SequenceMatch adds the <bksp> rows itself


def _datasets(script, cls, opts):
    from seqlevel.data import load_text_dataset

    text_field = opts.get("dataset_text_field", "text")
    train = load_text_dataset(script.dataset, text_field, config=script.dataset_config, split=script.dataset_split)
    evald = None
    if script.eval_dataset:
        if cls is SequenceMatchConfig:
            raise ValueError("--eval-dataset is not supported with --objective sequencematch (its trainer trains on "
                             "encoded trajectories); evaluate the saved model with `seqlevel evaluate`")
        evald = load_text_dataset(script.eval_dataset, text_field, config=script.dataset_config)
    return train, evald


def _build(script, cls, opts: dict, notes: list[str]):
    """Load data and model, build config and trainer; nothing is written to disk here."""
    from seqlevel.data import load_model_and_tokenizer
    from seqlevel.presets import MODEL_PRESETS

    if script.model in MODEL_PRESETS and "learning_rate" not in opts:
        opts["learning_rate"] = FROM_SCRATCH_LR
        notes.append(f"learning_rate {FROM_SCRATCH_LR:g}: the from-scratch default for presets (pass --lr to change)")
    for k, v in CLI_DEFAULTS.items():
        opts.setdefault(k, v)
    noise_fn = None
    if cls is SequenceMatchConfig and script.eval_dataset:
        raise ValueError("--eval-dataset is not supported with --objective sequencematch (its trainer trains on "
                         "encoded trajectories); drop --eval-dataset and --eval-strategy, and evaluate the saved "
                         "model with `seqlevel evaluate`")
    _check_precision(opts)
    if cls is SequenceMatchConfig and script.dataset == "arithmetic":
        train, evald, tok, model, noise_fn = _arithmetic(script, opts)
    else:
        if cls is SequenceMatchConfig and opts.get("noise_type") == "task":
            raise ValueError("--noise-type task needs a task that provides noise; use --dataset arithmetic or "
                             "--noise-type random")
        train, evald = _datasets(script, cls, opts)
        model, tok = load_model_and_tokenizer(script.model, script.tokenizer, seed=int(opts.get("seed", 42)))
        if cls is SequenceMatchConfig and "messages" in train.column_names and "prompt" not in train.column_names:
            from seqlevel.data import render_messages

            train = render_messages(train, tok)  # prompt/completion: SequenceMatch imitates the reply only
    _resolve_lengths(script, cls, opts, model, notes)
    cfg = cls(**opts)
    strategy = getattr(cfg.eval_strategy, "value", cfg.eval_strategy)  # an IntervalStrategy, shown as its value
    if strategy != "no" and evald is None:
        if cls is SequenceMatchConfig:
            raise ValueError(f"--eval-strategy {strategy} needs evaluation data, which --objective sequencematch "
                             "does not take; drop --eval-strategy and evaluate the saved model with "
                             "`seqlevel evaluate`")
        raise ValueError(f"--eval-strategy {strategy} needs evaluation data; pass --eval-dataset PATH")
    peft_config = _peft_config(script, tok, model) if script.use_peft else None
    with _missing_integration(cfg):
        return cfg, _trainer(script, cls, cfg, model, tok, train, evald, noise_fn, peft_config)


def _check_precision(opts: dict) -> None:
    """--bf16/--fp16 without a GPU: our one line instead of the Trainer's message about use_cpu."""
    import torch

    for flag in ("bf16", "fp16"):
        if opts.get(flag) and not opts.get("use_cpu") and not torch.cuda.is_available():
            raise ValueError(f"--{flag} needs a CUDA GPU, and none is available on this machine; drop --{flag} "
                             "(training on the CPU runs in float32)")


@contextlib.contextmanager
def _missing_integration(cfg):
    """The Trainer raises RuntimeError for a --report_to whose package is not installed; make it a named error."""
    try:
        yield
    except RuntimeError as e:
        if "install" not in str(e):
            raise
        raise ValueError(f"--report_to {','.join(cfg.report_to or [])}: {e}") from e


def _trainer(script, cls, cfg, model, tok, train, evald, noise_fn, peft_config):
    if cls is SequenceMatchConfig:
        from seqlevel.trainers.sequencematch import SequenceMatchTrainer

        _check_sequencematch_steps(cfg, len(train))
        try:
            trainer = SequenceMatchTrainer(model=model, args=cfg, train_dataset=train, processing_class=tok,
                                           noise_fn=noise_fn, peft_config=peft_config)
        except ValueError as e:
            if "trajectory needs" not in str(e):
                raise
            raise ValueError(f"{e}; with seqlevel train: lower --max-length (now {cfg.max_length}) or --p-noise "
                             f"(now {cfg.p_noise})") from e
    elif cls is AttributeConfig:
        from seqlevel.trainers.attribute import AttributeTrainer

        _check_attribute_column(train, cfg, script.dataset)

        trainer = AttributeTrainer(model, args=cfg, train_dataset=train, eval_dataset=evald, processing_class=tok,
                                   peft_config=peft_config)
        if not any(p.requires_grad for p in trainer.model.head.parameters()):
            raise ValueError("the CAT head has no trainable parameter; this PEFT setup froze it")
    else:
        from seqlevel.trainers.mixce import MixCETrainer

        trainer = MixCETrainer(model=model, args=cfg, train_dataset=train, eval_dataset=evald, processing_class=tok,
                               peft_config=peft_config)
    return trainer


def _check_attribute_column(ds, cfg, path: str) -> None:
    col = cfg.attribute_field
    if col not in ds.column_names:
        raise ValueError(f"dataset {path!r} has columns {ds.column_names} but no attribute column {col!r}; add one "
                         "label per example or pass --attribute-field COLUMN")
    bad = next((v for v in ds[col] if isinstance(v, bool) or not isinstance(v, int | float) or v != v), "ok")
    if bad != "ok":
        raise ValueError(f"attribute column {col!r} of {path!r} holds {bad!r}; labels must be numbers (class ids "
                         "0..K-1 for binary/categorical, any finite number for --attribute-kind numeric)")


def _arithmetic(script, opts):
    """The SequenceMatch §6.1 task, built locally: 5,000 add_or_sub_in_base questions and their tokenizer."""
    import datasets

    from seqlevel.presets import MODEL_PRESETS, tiny_model
    from seqlevel.tasks.arithmetic import arithmetic_tokenizer, make_splits, task_noise, to_dataset_dict

    if script.model not in MODEL_PRESETS or script.tokenizer:
        raise ValueError("--dataset arithmetic trains a preset model from scratch on its character tokenizer; "
                         f"pass --model one of {', '.join(sorted(MODEL_PRESETS))} and no --tokenizer")
    seed = int(opts.get("seed", 42))
    tok = arithmetic_tokenizer()
    train, _ = make_splits(5000, 0, seed=seed)
    opts.setdefault("noise_type", "task")
    return (datasets.Dataset.from_dict(to_dataset_dict(train, tok)), None, tok,
            tiny_model(script.model, tokenizer=tok, seed=seed), task_noise(tok))


def run(args: argparse.Namespace) -> int:
    """Parse the options, check every input, then train with a lock on --output-dir; see :mod:`.train_run`."""
    from seqlevel.commands.train_run import execute

    script, cls, opts = _options(args)
    notes: list[str] = []
    out = os.fspath(opts["output_dir"])
    from seqlevel.commands.train_run import check_output_dir

    check_output_dir(out, script)  # before any work: a non-empty directory needs --resume or --overwrite-output-dir
    existed = os.path.exists(out)
    try:
        cfg, trainer = _build(script, cls, opts, notes)
    except BaseException:
        if not existed:  # the Trainer creates output_dir; a failed start leaves nothing behind
            with contextlib.suppress(OSError):
                os.rmdir(out)
        raise
    return execute(script, cfg, trainer, notes, getattr(args, "_argv", None), created=not existed)
