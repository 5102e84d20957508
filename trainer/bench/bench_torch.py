"""The PyTorch side of `rewardlab-train bench`: the same reward model (Hugging Face GPT-2,
vocab 8192, n_embd 256, 4 layers, 4 heads, 128 tokens, fused scaled-dot-product attention),
the same pairwise loss (-log sigmoid(r_chosen - r_rejected), mean over 16 pairs), gradient
clipping at 1.0 and AdamW (lr 1e-4), eager mode, on the same number of CPU threads.
Prints one JSON line of figures. Needs torch and transformers."""
import argparse, json, time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2ForSequenceClassification

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=10)
p.add_argument("--threads", type=int, default=torch.get_num_threads())
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
VOCAB, SEQ, PAIRS = 8192, 128, 16
cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=256, n_layer=4, n_head=4, num_labels=1,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)
model = GPT2ForSequenceClassification._from_config(cfg, attn_implementation="sdpa")
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
ids = torch.randint(1, VOCAB, (2 * PAIRS, SEQ))
mask = torch.ones_like(ids)

def median(xs):
    return sorted(xs)[len(xs) // 2]

fwd, bwd, upd, step = [], [], [], []
for i in range(args.steps + 2):
    t0 = time.perf_counter()
    r = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
    loss = -F.logsigmoid(r[0::2] - r[1::2]).mean()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    if i >= 2:
        fwd.append((t1 - t0) * 1e3); bwd.append((t2 - t1) * 1e3); upd.append((t3 - t2) * 1e3); step.append((t3 - t0) * 1e3)

model.eval()
score = []
with torch.no_grad():
    for i in range(args.steps + 2):
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=mask).logits.tolist()
        if i >= 2:
            score.append((time.perf_counter() - t0) * 1e3)

tokens = PAIRS * 2 * SEQ
ms = median(step)
print(json.dumps({
    "impl": "pytorch " + torch.__version__, "threads": torch.get_num_threads(), "ms_per_step": ms,
    "tokens_per_s": tokens / ms * 1e3, "forward_ms": median(fwd), "backward_ms": median(bwd),
    "optimizer_ms": median(upd), "score_ms_per_batch": median(score),
    "score_sequences_per_s": 2 * PAIRS / median(score) * 1e3, "score_tokens_per_s": tokens / median(score) * 1e3,
}))
