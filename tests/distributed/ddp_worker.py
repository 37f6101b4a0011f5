"""Worker for the 2-process CPU (gloo) tests: train a tiny model a few steps and write losses + weights.

Run as ``torchrun --nproc_per_node N ddp_worker.py OUT_DIR TRAINER PER_DEVICE_BATCH``, or directly with N = 1.
"""

import json
import os
import sys

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


def _ddp_kwargs() -> dict:
    # gloo only when actually launched with several processes; a single process must not ask for a backend
    return {"ddp_backend": "gloo"} if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}


def mixce_fsdp(out_dir: str, per_device: int):
    # FSDP2 over the GPT-2 blocks when launched with several processes; the single-process reference is plain
    extra = {}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        extra = dict(fsdp=True, fsdp_config={"version": 2, "transformer_layer_cls_to_wrap": ["GPT2Block"]})
    tr, model = mixce(out_dir, per_device, **extra)
    tr.save_model(os.path.join(out_dir, f"saved-{os.environ.get('WORLD_SIZE', '1')}"))  # consolidated on rank 0
    return tr, model


def mixce(out_dir: str, per_device: int, **extra):
    import datasets

    from seqlevel.presets import byte_tokenizer, tiny_model
    from seqlevel.trainers import MixCEConfig, MixCETrainer

    tok = byte_tokenizer()
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    texts = [f"example number {i} " + "ab" * (i % 5) for i in range(16)]
    args = MixCEConfig(output_dir=os.path.join(out_dir, "run"), report_to="none", max_steps=3,
                       per_device_train_batch_size=per_device, learning_rate=1e-2, optim="sgd", logging_steps=1,
                       save_strategy="no", use_cpu=True, seed=0, mixce_eta=0.3, **_ddp_kwargs(),
                       disable_tqdm=True, dataloader_pin_memory=False, **extra)
    tr = MixCETrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict({"text": texts}),
                      processing_class=tok)
    tr.train()
    return tr, model


def _dropout_off():
    return dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


def _sm(out_dir: str, per_device: int, resume: str | None = None, **overrides):
    import datasets

    from seqlevel.presets import byte_tokenizer, tiny_model
    from seqlevel.trainers import SequenceMatchConfig, SequenceMatchTrainer

    tok = byte_tokenizer()
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=0, **_dropout_off())
    ds = datasets.Dataset.from_dict({"prompt": [f"q{i}:" for i in range(16)],
                                     "completion": [f"{i % 7} ab" + "c" * (i % 3) for i in range(16)]})
    # Global settings are the same in both runs: 4 data rows and 4 replay rows per optimizer step, 4 rollouts per
    # refresh shared by the ranks. Near-greedy rollouts (temperature 1e-6) make each rollout a function of its prompt,
    # and a buffer exactly one replay batch deep makes every draw the whole (per-rank) buffer, so the union over
    # ranks of what is trained on is the single process's batch whenever rollouts are split across ranks.
    kw = dict(output_dir=os.path.join(out_dir, "run"), report_to="none", max_steps=3, per_device_train_batch_size=per_device,
              learning_rate=1e-2, optim="sgd", logging_steps=1, save_strategy="no", use_cpu=True, seed=0,
              disable_tqdm=True, dataloader_pin_memory=False, bc_warmup_steps=1, sm_weight=0.5, sample_every=1,
              rollouts_per_refresh=4, replay_buffer_size=per_device, replay_batch_size=per_device,
              rollout_temperature=1e-6, max_new_actions=6, p_noise=0.2, gamma=0.9, **_ddp_kwargs())
    kw.update(overrides)
    tr = SequenceMatchTrainer(model=model, args=SequenceMatchConfig(**kw), train_dataset=ds, processing_class=tok)
    tr.train(resume_from_checkpoint=resume)
    return tr, model


def sequencematch(out_dir: str, per_device: int):
    return _sm(out_dir, per_device)


def sequencematch_bc(out_dir: str, per_device: int):
    # the BC warm-up phase only (no rollouts): isolates the loss normalisation under DDP
    return _sm(out_dir, per_device, bc_warmup_steps=100)


def sequencematch_save(out_dir: str, per_device: int):
    # a refresh every 2nd SM step (steps 1 and 3 of 0..2): the last step trains on the buffer saved at step 2
    return _sm(out_dir, per_device, sample_every=2, save_strategy="steps", save_steps=2)


def sequencematch_resume(out_dir: str, per_device: int):
    # the last step of sequencematch_save, resumed from its checkpoint-2 (each rank loads its own replay buffer)
    return _sm(out_dir, per_device, resume=os.path.join(out_dir, "run", "checkpoint-2"), sample_every=2)


def attribute(out_dir: str, per_device: int):
    import datasets

    from seqlevel.presets import byte_tokenizer, tiny_model
    from seqlevel.trainers.attribute import AttributeConfig, AttributeTrainer

    tok = byte_tokenizer()
    model = tiny_model("tiny-gpt2", tokenizer=tok, seed=0, **_dropout_off())
    texts = [f"review {i}: " + ("good " if i % 2 else "bad ") * (1 + i % 3) for i in range(16)]
    args = AttributeConfig(output_dir=os.path.join(out_dir, "run"), report_to="none", max_steps=3,
                           per_device_train_batch_size=per_device, learning_rate=1e-2, optim="sgd", logging_steps=1,
                           save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True, dataloader_pin_memory=False,
                           attribute_kind="binary", attribute_lambda=0.5, **_ddp_kwargs())
    torch.manual_seed(0)  # the head's initialisation
    tr = AttributeTrainer(model, args=args, processing_class=tok,
                          train_dataset=datasets.Dataset.from_dict({"text": texts, "attribute": [i % 2 for i in range(16)]}))
    tr.train()
    return tr, tr.model


TRAINERS = {"mixce": mixce, "mixce_fsdp": mixce_fsdp, "sequencematch": sequencematch, "sequencematch_bc": sequencematch_bc,
            "attribute": attribute, "sequencematch_save": sequencematch_save,
            "sequencematch_resume": sequencematch_resume}


def main():
    out_dir, name, per_device = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tr, model = TRAINERS[name](out_dir, per_device)
    model = getattr(model, "module", model)
    sd = {}
    for k, v in model.state_dict().items():  # on every rank: gathering an FSDP2 shard is a collective
        if k.endswith(("wte.weight", "token_keys", "query.weight")):
            sd[k] = (v.full_tensor() if hasattr(v, "full_tensor") else v).tolist()
    if tr.is_world_process_zero():
        losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
        with open(os.path.join(out_dir, f"result-{os.environ.get('WORLD_SIZE', '1')}.json"), "w") as f:
            json.dump({"losses": losses, "weights": sd}, f)


if __name__ == "__main__":
    main()
