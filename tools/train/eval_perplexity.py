"""Reference perplexity of a Hugging Face causal LM on a text, with transformers.

The number the model cards cite and the engine's tests compare against, so the
procedure is fixed and simple enough to reproduce exactly elsewhere:
  1. tokenize the whole text without special tokens (ids t_1..t_N);
  2. cut the ids into consecutive non-overlapping pieces of (context - 1) tokens,
     the last one possibly shorter;
  3. each window is [BOS] + piece (at most `context` tokens), evaluated independently
     from an empty cache;
  4. every text token is predicted exactly once, from BOS and the tokens before it in
     its window; perplexity = exp(mean negative log-likelihood over all N tokens).
"""
import argparse
import contextlib
import json
import math
import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch


def windows(ids, context, bos_id):
    """The evaluation windows of step 2-3, as lists of ids."""
    step = context - 1
    return [[bos_id] + ids[i:i + step] for i in range(0, len(ids), step)]


@torch.no_grad()
def nll_sum(model, wins, batch_size=8, autocast_dtype=None):
    """(sum of -log p over predicted tokens, number of predicted tokens) for windows."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    # Equal-length windows batch together (all but possibly the last one).
    by_len = {}
    for w in wins:
        by_len.setdefault(len(w), []).append(w)
    for length, group in by_len.items():
        if length < 2:
            continue
        for b in range(0, len(group), batch_size):
            x = torch.tensor(group[b:b + batch_size], device=device)
            amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype
                   else contextlib.nullcontext())
            with amp:
                logits = model(input_ids=x).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            tok_lp = logp.gather(-1, x[:, 1:, None]).squeeze(-1)
            total -= tok_lp.double().sum().item()
            count += tok_lp.numel()
    return total, count


def perplexity(model, tokenizer, text, context=2048, max_windows=None, batch_size=8,
               autocast_dtype=None):
    """Dict with tokens, windows, nll (mean, nats/token) and ppl for one text."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    wins = windows(ids, context, tokenizer.bos_token_id)
    if max_windows:
        wins = wins[:max_windows]
    total, count = nll_sum(model, wins, batch_size, autocast_dtype)
    return {"chars": len(text), "text_tokens": len(ids), "windows": len(wins),
            "predicted_tokens": count, "context": context,
            "nll": total / count, "ppl": math.exp(total / count)}


def load(folder, device="cpu", dtype=torch.float32):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    # tokenizer.json as written (what the model was trained on and kivi-host reads):
    # AutoTokenizer builds Qwen2Tokenizer for a qwen2 folder, whose pre-tokenizer differs.
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    return model, tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Hugging Face model folder")
    ap.add_argument("--text", required=True, nargs="+", help="UTF-8 text file(s)")
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="weights dtype for the forward pass (float32 = reference)")
    ap.add_argument("--max-windows", type=int, help="evaluate only the first N windows")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--json", help="also write the results to this file")
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False  # reference numbers: true fp32 matmuls
    torch.backends.cudnn.allow_tf32 = False
    model, tok = load(a.model, a.device, getattr(torch, a.dtype))
    results = {}
    for path in a.text:
        text = pathlib.Path(path).read_bytes().decode("utf-8")
        r = perplexity(model, tok, text, a.context, a.max_windows, a.batch_size)
        results[path] = r
        print(f"{path}: ppl {r['ppl']:.4f}  nll {r['nll']:.5f}  ({r['predicted_tokens']} tokens, "
              f"{r['windows']} windows of <= {a.context}, {a.dtype}, {a.device})", flush=True)
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
