"""Continues a rewardlab model in Hugging Face TRL, and writes a directory rewardlab loads back.

    python trainer/scripts/continue_in_trl.py rm  --model RM_DIR  --data PREFS.jsonl --out DIR
    python trainer/scripts/continue_in_trl.py dpo --model SFT_DIR --data PREFS.jsonl --out DIR
    python trainer/scripts/continue_in_trl.py sft --model SFT_DIR --data SFT.jsonl   --out DIR

RM_DIR is a reward model written by `rewardlab-train rm` (or a run's model from the platform),
SFT_DIR a policy written by `sft`, `dpo` or `ppo`; PREFS a `preferences` export's train.jsonl
(rows with `prompt`, `chosen`, `rejected`) or HH-RLHF / TRL pair files; SFT an `sft` export's
rows (`prompt`, `response`). The directories are Hugging Face's GPT-2 layout, so TRL takes them
as they are: `rm` runs `RewardTrainer` on `GPT2ForSequenceClassification`, `dpo` runs
`DPOTrainer` (the reference model a frozen copy of the start), `sft` runs `SFTTrainer`. Texts
are joined as rewardlab joins them (a space only where neither side has one at the joint), so
the continued model sees what rewardlab's did. OUT holds `config.json` (rewardlab's own keys
kept), `model.safetensors` and the tokenizer: put it in the model store's `shared/` folder and a
run names it as `policy_path` / `reward_model_path` (generate, score, ppo, dpo).

Prints one JSON line: the kind, steps, first and last training loss. Needs torch, transformers
and trl (tested in CI with torch 2.15, transformers 5.24, trl 1.16), on the CPU.
"""
import argparse, gzip, json, sys

import torch
from datasets import Dataset
from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2LMHeadModel, TrainerCallback

# rewardlab's joining of a prompt and a response and its rendering of chat turns (this folder).
from check_hf_equivalence import join, render


def rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{n}: not JSON: {e}")


def pairs(path):
    """(prompt, chosen, rejected) of preference rows; HH-RLHF rows carry the prompt in both."""
    out = []
    for row in rows(path):
        chosen, rejected = render(row["chosen"]), render(row["rejected"])
        prompt = render(row.get("prompt", ""))
        if not prompt:
            # HH-RLHF: the longest common prefix ending at the last assistant turn is the prompt.
            mark = "\n\nAssistant:"
            at = chosen.rfind(mark)
            if at >= 0 and rejected.startswith(chosen[: at + len(mark)]):
                prompt, chosen, rejected = chosen[: at + len(mark)], chosen[at + len(mark):], rejected[at + len(mark):]
        out.append((prompt, chosen, rejected))
    if not out:
        sys.exit(f"{path}: no rows")
    return out


def config(cls, **kw):
    """cls(**kw) without the options this TRL version does not have (their names move)."""
    fields = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in kw.items() if k in fields})


class Losses(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["rm", "dpo", "sft"])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="default: 1e-4 (rm, sft), 5e-5 (dpo)")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)

    tok = AutoTokenizer.from_pretrained(a.model)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    common = dict(output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=a.batch_size, logging_steps=1,
                  save_strategy="no", report_to=[], use_cpu=True, seed=a.seed, remove_unused_columns=False)
    losses = Losses()
    if a.kind == "rm":
        from trl import RewardConfig, RewardTrainer
        model = GPT2ForSequenceClassification.from_pretrained(a.model, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        # Tokenized as rewardlab's reward model reads a text: no special tokens, and a text longer
        # than the model loses its beginning (TRL would drop the pair instead).
        n = model.config.to_dict().get("rewardlab", {}).get("max_len", model.config.n_positions)
        ids = lambda text: tok(text, add_special_tokens=False)["input_ids"][-n:]
        data = Dataset.from_list([{"chosen_ids": ids(join(p_, c)), "rejected_ids": ids(join(p_, r))} for p_, c, r in pairs(a.data)])
        args = config(RewardConfig, learning_rate=a.lr or 1e-4, max_length=model.config.n_positions, center_rewards_coefficient=None, **common)
        trainer = RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[losses])
    elif a.kind == "dpo":
        from trl import DPOConfig, DPOTrainer
        model = GPT2LMHeadModel.from_pretrained(a.model)
        data = Dataset.from_list([
            {"prompt": p_, "chosen": join(p_, c)[len(p_):], "rejected": join(p_, r)[len(p_):]} for p_, c, r in pairs(a.data)
        ])
        n = model.config.n_positions
        args = config(DPOConfig, learning_rate=a.lr or 5e-5, beta=a.beta, max_length=n, max_prompt_length=n // 2, **common)
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tok, callbacks=[losses])
    else:
        from trl import SFTConfig, SFTTrainer
        model = GPT2LMHeadModel.from_pretrained(a.model)
        data = []
        for i, r in enumerate(rows(a.data), 1):
            if "response" not in r and "completion" not in r:
                sys.exit(f"{a.data}: row {i}: expected `response` (an sft export) or `completion` (TRL prompt-completion rows), got {sorted(r)}")
            prompt = render(r.get("prompt", ""))
            completion = join(prompt, render(r.get("response", r.get("completion", ""))))[len(prompt):]
            data.append({"prompt": prompt, "completion": completion + tok.eos_token})
        data = Dataset.from_list(data)
        n = model.config.n_positions
        args = config(SFTConfig, learning_rate=a.lr or 1e-4, max_length=n, max_seq_length=n, packing=False, **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[losses])
    trainer.train()
    trainer.save_model(a.out)
    tok.save_pretrained(a.out)
    print(json.dumps({"kind": a.kind, "steps": trainer.state.global_step, "first_loss": losses.losses[0] if losses.losses else None,
                      "last_loss": losses.losses[-1] if losses.losses else None, "out": a.out}))


if __name__ == "__main__":
    main()
