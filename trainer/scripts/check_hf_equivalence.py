"""Checks that Hugging Face `transformers` loads rewardlab's model directories unchanged and
gives the same outputs.

    python trainer/scripts/check_hf_equivalence.py --model RM_DIR --data FILE --scores SCORES
        [--lm SFT_DIR]

RM_DIR is a reward model written by `rewardlab-train rm`, FILE the preference or item rows that
`rewardlab-train score --model RM_DIR --data FILE --out SCORES` scored. The script loads RM_DIR
with `GPT2ForSequenceClassification.from_pretrained` and its tokenizer with
`AutoTokenizer.from_pretrained`, scores the same texts one at a time (no padding), subtracts
the saved reward bias, and compares with SCORES: it prints the largest difference and exits 1
when it is 1e-4 or more. With --lm it also loads an SFT directory as `GPT2LMHeadModel` and
checks that no weight was missing and the LM head is the token embedding.
Needs torch and transformers.
"""
import argparse, gzip, json, sys

import torch
from transformers import AutoTokenizer, GPT2ForSequenceClassification, GPT2LMHeadModel

MARK = "\n\nAssistant:"


def join(prompt, response):
    """rewardlab_trainer::data::join: a space only where neither side has one at the joint."""
    gap = prompt and response and not prompt[-1].isspace() and not response[0].isspace()
    return prompt + (" " if gap else "") + response


def render(v):
    if isinstance(v, str):
        return v
    return "".join(f"\n\n{'Assistant' if t['role'] == 'assistant' else 'Human'}: {t['content']}" for t in v)


def texts_of(row):
    if "chosen" in row:
        chosen, rejected = render(row["chosen"]), render(row["rejected"])
        if "prompt" in row:
            prompt = render(row["prompt"])
        else:  # implicit prompt: the last "\n\nAssistant:" of the common prefix
            common = 0
            while common < min(len(chosen), len(rejected)) and chosen[common] == rejected[common]:
                common += 1
            at = chosen[:common].rindex(MARK) + len(MARK)
            prompt, chosen, rejected = chosen[:at], chosen[at:], rejected[at:]
        return [join(prompt, chosen), join(prompt, rejected)]
    prompt = render(row["prompt"])
    return [join(prompt, r if isinstance(r, str) else r["text"]) for r in row["responses"]]


def rows_of(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--scores", required=True)
    p.add_argument("--lm")
    args = p.parse_args()

    model, info = GPT2ForSequenceClassification.from_pretrained(args.model, output_loading_info=True)
    model.eval()
    missing = info["missing_keys"]
    if missing:
        sys.exit(f"transformers found no weights for {missing} in {args.model}")
    tok = AutoTokenizer.from_pretrained(args.model)
    extra = model.config.to_dict().get("rewardlab", {})
    bias = extra.get("reward_bias", 0.0)
    max_len = extra.get("max_len", model.config.n_positions)

    ours = []
    for row in rows_of(args.scores):
        ours.extend([row["chosen_reward"], row["rejected_reward"]] if "chosen_reward" in row else row["rewards"])
    texts = [t for row in rows_of(args.data) for t in texts_of(row)]
    if len(texts) != len(ours):
        sys.exit(f"{len(texts)} texts in {args.data} but {len(ours)} scores in {args.scores}")

    worst = 0.0
    with torch.no_grad():
        for text, mine in zip(texts, ours):
            ids = tok(text, add_special_tokens=False)["input_ids"][-max_len:]
            hf = model(input_ids=torch.tensor([ids])).logits[0, 0].item() - bias
            worst = max(worst, abs(hf - mine))
    print(f"reward model: {len(texts)} texts, largest |transformers - rewardlab| = {worst:.3g}")

    if args.lm:
        lm, info = GPT2LMHeadModel.from_pretrained(args.lm, output_loading_info=True)
        missing = [k for k in info["missing_keys"] if k != "lm_head.weight"]
        if missing:
            sys.exit(f"transformers found no weights for {missing} in {args.lm}")
        if not torch.equal(lm.lm_head.weight, lm.transformer.wte.weight):
            sys.exit("the LM head is not tied to the token embedding")
        print(f"policy: {args.lm} loads as GPT2LMHeadModel, LM head tied to wte")
    if worst >= 1e-4:
        sys.exit(f"outputs differ by {worst} (limit 1e-4)")


if __name__ == "__main__":
    main()
