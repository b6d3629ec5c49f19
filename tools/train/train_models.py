"""Train the bundled tiny Llama and Qwen2 models on one GPU, in minutes.

Small (about 5M parameters) but real: GQA, long-context RoPE and 2048-token training
sequences, so that contexts far beyond KIVI's 128-token residual window mean something.
Each model gets a fixed seed, a step limit and a time limit (whichever comes first; the
cosine schedule follows whichever is nearer, so it always anneals), early stopping on a
validation slice of the training corpora, and is saved as a standard Hugging Face folder
with its settings, losses and reference held-out perplexity (training.json) and a model card.
Needs only torch, transformers, tokenizers, safetensors and no network.
"""
import argparse
import json
import math
import os
import pathlib
import platform
import shutil
import sys
import tarfile
import time

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may reach for a hub
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import safetensors
import tokenizers
import torch
import transformers
from transformers.utils import logging as hf_logging
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import corpus  # noqa: E402
import eval_perplexity  # noqa: E402

# Shared shape: GQA 4 query heads over 2 KV heads of 64; tied embeddings keep it ~5M params.
ARCH = dict(hidden_size=256, intermediate_size=640, num_hidden_layers=6,
            num_attention_heads=4, num_key_value_heads=2, head_dim=64,
            vocab_size=4096, max_position_embeddings=4096, rope_theta=500000.0,
            rms_norm_eps=1e-5, tie_word_embeddings=True, initializer_range=0.02,
            bos_token_id=0, eos_token_id=1, pad_token_id=2)
MODELS = {  # name -> (config class, model class, extra config)
    "kivi-llama-tiny": (LlamaConfig, LlamaForCausalLM, {}),
    "kivi-qwen2-tiny": (Qwen2Config, Qwen2ForCausalLM,  # Qwen2 always has q/k/v bias
                        {"use_sliding_window": False, "max_window_layers": ARCH["num_hidden_layers"]}),
}
SAMPLE_PROMPT = "It is a truth universally acknowledged, that"


def log(*a):
    print(*a, flush=True)


def tokenize_split(tok_file, data_dir):
    """Token ids of every document of every split (whole documents, as eval does)."""
    tok = tokenizers.Tokenizer.from_file(str(tok_file))
    split = corpus.load_split(data_dir)
    out = {}
    for part, docs in split.items():
        encs = tok.encode_batch([t for _, t in docs], add_special_tokens=False)
        out[part] = [(name, e.ids) for (name, _), e in zip(docs, encs)]
    return out


def build_stream(docs, eos_id):
    """Training stream: documents joined by EOS; windows are cut from it at random."""
    ids = []
    for _, d in docs:
        ids += d + [eos_id]
    return torch.tensor(ids, dtype=torch.long)


def eval_windows(docs, seq_len, bos_id, max_windows=None):
    wins = [w for _, d in docs for w in eval_perplexity.windows(d, seq_len, bos_id)]
    return wins[:max_windows] if max_windows else wins


def mean_loss(model, wins, batch_size, amp):
    model.eval()
    total, n = eval_perplexity.nll_sum(model, wins, batch_size, torch.bfloat16 if amp else None)
    model.train()
    return total / n


def lr_at(step, progress, a):
    """Linear warmup by steps, then cosine to min_lr over progress in [0, 1]."""
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    return a.lr * (a.min_lr_ratio + (1 - a.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_one(name, data, a, device, out_root, tok_dir):
    cfg_cls, model_cls, extra = MODELS[name]
    torch.manual_seed(a.seed)
    config = cfg_cls(**ARCH, **extra)
    model = model_cls(config).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"== {name}: {n_params:,} parameters, device {device}")

    bos, eos = ARCH["bos_token_id"], ARCH["eos_token_id"]
    stream = build_stream(data["train"], eos).to(device)
    val_wins = eval_windows(data["val"], a.seq_len, bos, a.val_windows)
    gen = torch.Generator().manual_seed(a.seed)
    span = torch.arange(a.seq_len - 1, device=device)

    def batch(bsz=a.batch_size):
        """bsz windows of [BOS] + seq_len-1 stream tokens at random offsets (as evaluated)."""
        offs = torch.randint(0, len(stream) - a.seq_len, (bsz,), generator=gen).to(device)
        bos_col = torch.full((bsz, 1), bos, dtype=torch.long, device=device)
        return torch.cat([bos_col, stream[offs[:, None] + span]], dim=1)

    train_eval_wins = batch(a.val_windows).tolist()  # fixed sample for the final train loss

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")
    amp = device.type == "cuda" or a.amp_cpu
    history, best = [], {"val_loss": float("inf"), "step": 0}
    best_state, bad_evals, stop_reason = None, 0, "max_steps"
    anneal = None  # (start step, start lr, length) once validation stops improving
    tokens_per_step = a.batch_size * (a.seq_len - 1)
    run_loss, run_n, t_log = 0.0, 0, time.time()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    step = 0
    while step < a.max_steps:
        elapsed = time.time() - t0
        if elapsed >= a.time_budget:
            stop_reason = "time_budget"
            break
        if anneal:  # overfitting: decay linearly to min lr over a short stretch, then stop
            s0, lr0, n = anneal
            if step >= s0 + n:
                stop_reason = "early_stop_annealed"
                break
            lr = a.lr * a.min_lr_ratio + (lr0 - a.lr * a.min_lr_ratio) * (1 - (step - s0) / n)
        else:
            progress = max(step / a.max_steps, elapsed / a.time_budget)
            lr = lr_at(step, progress, a)
        for g in opt.param_groups:
            g["lr"] = lr
        x = batch()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        run_loss += loss.detach()  # summed on the device: no sync per step
        run_n += 1
        if step % a.log_every == 0 or step == a.max_steps:
            dt = time.time() - t_log
            rec = {"step": step, "loss": run_loss.item() / run_n, "lr": lr, "grad_norm": float(gnorm),
                   "elapsed_s": round(time.time() - t0, 2)}
            log(f"{name} step {step:5d} loss {rec['loss']:.4f} lr {lr:.2e} gnorm {float(gnorm):.2f} "
                f"{run_n * tokens_per_step / dt:,.0f} tok/s  {rec['elapsed_s']:.0f}s")
            history.append(rec)
            run_loss, run_n, t_log = 0.0, 0, time.time()
        if step % a.eval_every == 0 or step == a.max_steps:
            vl = mean_loss(model, val_wins, a.eval_batch_size, amp)
            history.append({"step": step, "val_loss": vl, "elapsed_s": round(time.time() - t0, 2)})
            improved = vl < best["val_loss"]
            log(f"{name} step {step:5d} val_loss {vl:.4f}{'  (best)' if improved else ''}")
            if improved:
                best = {"val_loss": vl, "step": step}
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                bad_evals = 0
            else:
                bad_evals += 1
                if bad_evals >= a.patience and not anneal:
                    anneal = (step, lr, max(2 * a.eval_every, step // 10))
                    log(f"{name} step {step:5d}: no better val loss in {a.patience} evals; "
                        f"annealing over {anneal[2]} steps, then stopping")
            t_log = time.time()  # keep eval time out of tok/s
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_time = time.time() - t0
    # One last validation if the loop ended between evaluations.
    vl = mean_loss(model, val_wins, a.eval_batch_size, amp)
    if vl < best["val_loss"]:
        best, best_state = {"val_loss": vl, "step": step}, None
    if best_state is not None:
        model.load_state_dict(best_state)
    log(f"{name}: stopped by {stop_reason} after {step} steps, {train_time:.1f}s; "
        f"keeping step {best['step']} (val_loss {best['val_loss']:.4f})")
    final_train_loss = mean_loss(model, train_eval_wins, a.eval_batch_size, amp)
    last = [h["loss"] for h in history if "loss" in h][-5:]

    # Save in bf16 as a standard Hugging Face folder.
    folder = out_root / name
    if folder.exists():
        shutil.rmtree(folder)
    model.to(torch.bfloat16).save_pretrained(folder)
    os.chmod(folder / "model.safetensors", 0o644)  # safetensors writes it 0600
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rope_theta"] = ARCH["rope_theta"]  # top-level too, for loaders that predate rope_parameters
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    GenerationConfig(bos_token_id=bos, eos_token_id=eos, pad_token_id=ARCH["pad_token_id"],
                     do_sample=True, temperature=0.8, top_p=0.95).save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok_dir / f, folder / f)
    del model, opt, best_state
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # Reference numbers: reload the saved folder with transformers, fp32, no TF32.
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    ref, reftok = eval_perplexity.load(str(folder), device, torch.float32)
    heldout = {}
    for tname, text in corpus.load_split(a.data_dir / "corpora")["test"]:
        heldout[tname] = eval_perplexity.perplexity(ref, reftok, text, a.seq_len, a.test_max_windows,
                                                    a.eval_batch_size)
        log(f"{name} held-out {tname}: ppl {heldout[tname]['ppl']:.3f} (nll {heldout[tname]['nll']:.4f})")
    tot = sum(r["nll"] * r["predicted_tokens"] for r in heldout.values())
    cnt = sum(r["predicted_tokens"] for r in heldout.values())
    heldout["all"] = {"predicted_tokens": cnt, "nll": tot / cnt, "ppl": math.exp(tot / cnt)}
    enc = reftok(SAMPLE_PROMPT, return_tensors="pt").to(device)
    out_ids = ref.generate(**enc, max_new_tokens=48, do_sample=False)
    sample = reftok.decode(out_ids[0], skip_special_tokens=True)
    log(f"{name} greedy sample: {sample!r}")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    del ref

    info = {
        "model": name, "architecture": model_cls.__name__, "parameters": n_params,
        "config": {**ARCH, **extra},
        "training": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(a).items()},
        "data": {"train_tokens": len(stream), "val_windows": len(val_wins),
                 "train_docs": [n for n, _ in data["train"]], "val_docs": [n for n, _ in data["val"]],
                 "heldout_docs": [n for n, _ in data["test"]], "split": corpus.__doc__.strip()},
        "result": {"stop_reason": stop_reason, "steps_done": step, "best_step": best["step"],
                   "tokens_seen": step * tokens_per_step,
                   "epochs": round(step * tokens_per_step / len(stream), 2),
                   "train_wall_s": round(train_time, 1), "val_loss": best["val_loss"],
                   "final_train_loss_last_logs": sum(last) / max(len(last), 1),
                   "final_train_loss_eval": final_train_loss,
                   "heldout_reference": heldout, "heldout_reference_note":
                   "transformers, fp32 weights from model.safetensors (bf16), TF32 off; "
                   "tools/train/eval_perplexity.py procedure", "greedy_sample": sample},
        "history": history,
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "tokenizers": tokenizers.__version__, "safetensors": safetensors.__version__,
                        "python": platform.python_version(),
                        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"},
    }
    (folder / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(info))
    log(f"{name}: saved {folder} ({sum(f.stat().st_size for f in folder.iterdir()) / 1e6:.1f} MB)")
    return info


def model_card(info):
    r, c, t = info["result"], info["config"], info["training"]
    h = r["heldout_reference"]
    rows = "\n".join(f"| {k} | {v['predicted_tokens']:,} | {v['nll']:.4f} | {v['ppl']:.3f} |" for k, v in h.items())
    return f"""---
license: cc0-1.0
library_name: transformers
pipeline_tag: text-generation
tags: [kivi, tiny, base-model]
---
# {info['model']}

A tiny {info['architecture'].replace('ForCausalLM', '')}-architecture base model (`{info['architecture']}`,
{info['parameters']:,} parameters, bf16) trained by the kivi project from scratch so that the engine
ships with real weights: no model hub is needed. It writes Austen- and Bible-flavoured English;
it is a test and demonstration model, not an assistant (no chat template).

## Architecture
{c['num_hidden_layers']} layers, hidden {c['hidden_size']}, {c['num_attention_heads']} query heads and
{c['num_key_value_heads']} KV heads (GQA) of dimension {c['head_dim']}, SwiGLU MLP {c['intermediate_size']},
RMSNorm, RoPE theta {c['rope_theta']:g}, `max_position_embeddings` {c['max_position_embeddings']}
(trained at {t['seq_len']}), tied embeddings, vocabulary {c['vocab_size']}
(byte-level BPE, `<|bos|>`=0 added by the tokenizer, `<|eos|>`=1, `<|pad|>`=2).
{'Qwen2 layout: q/k/v projections have biases.' if 'Qwen2' in info['architecture'] else 'Llama layout: no biases.'}

## Data and licence
Public-domain English text from `shared/data/corpora` (see `shared/data/SOURCES.md`): five Jane Austen
novels, the King James Bible, the World English Bible, Bierce's Devil's Dictionary and the Jargon File.
**Held out** from the tokenizer and the model: all of *Persuasion* (`austen_persuasion.txt`) and the
last 5% of the lines of `kjv.txt` and `web_bible.txt`. The last 2% of every training file served
only for early stopping. The texts are public domain; these weights and the tokenizer are
dedicated to the public domain as well (CC0-1.0).

## Training
{r['steps_done']} steps of {t['batch_size']} x {t['seq_len']} tokens ({r['tokens_seen']:,} tokens, {r['epochs']} epochs of
{info['data']['train_tokens']:,}), AdamW (lr {t['lr']}, betas 0.9/0.95, weight decay {t['weight_decay']}),
{t['warmup']} warmup steps then cosine to {t['min_lr_ratio']} x lr, bf16 autocast, seed {t['seed']}; stopped by
`{r['stop_reason']}` after {r['train_wall_s']} s on {info['environment']['device']}; weights kept from step
{r['best_step']} (best validation loss {r['val_loss']:.4f}). Training loss at the end {r['final_train_loss_eval']:.4f}.
torch {info['environment']['torch']}, transformers {info['environment']['transformers']},
tokenizers {info['environment']['tokenizers']}. Everything is in `training.json`.

## Held-out perplexity (reference: transformers)
Context {t['seq_len']}: each window is `<|bos|>` + {t['seq_len'] - 1} text tokens, every token predicted once;
fp32 forward pass of these bf16 weights with transformers (`tools/train/eval_perplexity.py`).

| text | tokens | nll | perplexity |
| --- | ---: | ---: | ---: |
{rows}

Reproduce: `python tools/train/eval_perplexity.py --model models/{info['model']} --text ../shared/data/corpora/austen_persuasion.txt --context {t['seq_len']}`
(`python tools/train/corpus.py --write-heldout DIR` writes the Bible held-out tails).

Greedy continuation of "{SAMPLE_PROMPT}":
> {r['greedy_sample']!s}

## Retrain
```
tools/train/prepare_gpu_data.sh            # .train-data/: corpora + models/tokenizer
python3 tools/train/train_models.py --data-dir .train-data --out-dir /tmp/kivi-models --tar-dir $OUT
tar -xf {info['model']}.tar -C models/     # back in the checkout
```
The tokenizer is retrained (deterministically) with `python tools/train/train_tokenizer.py`.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=pathlib.Path, required=True, help="holds corpora/*.txt and tokenizer/")
    ap.add_argument("--out-dir", type=pathlib.Path, required=True)
    ap.add_argument("--tar-dir", type=pathlib.Path, help="also pack each model folder into DIR/<name>.tar")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=2500)
    ap.add_argument("--time-budget", type=float, default=180.0, help="seconds of training per model")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--patience", type=int, default=5,
                    help="after this many evals without a better val loss, anneal briefly and stop")
    ap.add_argument("--val-windows", type=int, default=64)
    ap.add_argument("--eval-batch-size", type=int, default=16)
    ap.add_argument("--test-max-windows", type=int, help="limit held-out windows (smoke tests)")
    ap.add_argument("--amp-cpu", action="store_true", help="bf16 autocast on CPU as well")
    a = ap.parse_args()

    t_start = time.time()
    hf_logging.disable_progress_bar()  # keep the GPU log to progress lines
    device = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    tok_dir = a.data_dir / "tokenizer"
    log(f"torch {torch.__version__} transformers {transformers.__version__} tokenizers {tokenizers.__version__} "
        f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    data = tokenize_split(tok_dir / "tokenizer.json", a.data_dir / "corpora")
    log(f"data: " + ", ".join(f"{p} {sum(len(d) for _, d in docs):,} tokens" for p, docs in data.items())
        + f" ({time.time() - t_start:.1f}s)")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in a.models.split(","):
        t = time.time()
        info = train_one(name, data, a, device, a.out_dir, tok_dir)
        summary[name] = {"parameters": info["parameters"], "steps": info["result"]["steps_done"],
                         "stop": info["result"]["stop_reason"], "wall_s": round(time.time() - t, 1),
                         "heldout_ppl": {k: round(v["ppl"], 3) for k, v in info["result"]["heldout_reference"].items()}}
    if a.tar_dir:  # one tar per model: each stays under the 16 MB a returned file may have
        a.tar_dir.mkdir(parents=True, exist_ok=True)
        for name in a.models.split(","):
            path = a.tar_dir / f"{name}.tar"
            with tarfile.open(path, "w") as tf:
                tf.add(a.out_dir / name, arcname=name)
            log(f"packed {path} ({path.stat().st_size / 1e6:.1f} MB)")
    log(json.dumps(summary, indent=2))
    log(f"total {time.time() - t_start:.1f}s")


if __name__ == "__main__":
    main()
