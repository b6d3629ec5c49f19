"""Train the bundled byte-level BPE tokenizer (Llama-3 style) on the training split.

Byte-level so that any UTF-8 text round-trips without an unknown token; the Llama-3 split
regex and layout so that the engine's tokenizer.json loader meets a familiar structure.
The held-out evaluation text (corpus.py) is excluded so held-out perplexity stays honest.
Deterministic: same corpora, same tokenizers version -> byte-identical tokenizer.json.
"""
import argparse
import hashlib
import json
import pathlib

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

import corpus

VOCAB_SIZE = 4096
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
MODEL_MAX_LENGTH = 4096
# Llama-3's pre-tokenization regex.
SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def build(texts, vocab_size=VOCAB_SIZE):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[BOS, EOS, PAD],  # ids 0, 1, 2
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even unseen ones
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Like Llama-3.1: BOS added by the post-processor; ByteLevel there only fixes offsets.
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS}:1 $B:1",
            special_tokens=[(BOS, tok.token_to_id(BOS))]),
    ])
    return tok


def tokenizer_config():
    """For transformers' AutoTokenizer (PreTrainedTokenizerFast over tokenizer.json)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
        "add_bos_token": True, "add_eos_token": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "padding_side": "left",
    }


def main():
    here = pathlib.Path(__file__).resolve()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(here.parents[3] / "shared/data/corpora"))
    ap.add_argument("--out-dir", default=str(here.parents[2] / "models/tokenizer"))
    ap.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    a = ap.parse_args()

    split = corpus.load_split(a.data_dir)
    texts = [t for _, t in split["train"] + split["val"]]
    tok = build(texts, a.vocab_size)

    out = pathlib.Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")

    # Stats: compression on held-out text, exact round trip.
    print(f"tokenizers {tokenizers.__version__}: vocab {tok.get_vocab_size()}, "
          f"sha256 {hashlib.sha256((out / 'tokenizer.json').read_bytes()).hexdigest()[:16]}")
    for name, text in split["test"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids, skip_special_tokens=False) == text, f"round trip failed on {name}"
        print(f"  held-out {name:18s} {len(text):8d} chars {len(ids):7d} tokens "
              f"{len(text) / len(ids):.2f} chars/token")
    print("wrote", out / "tokenizer.json", "and tokenizer_config.json")


if __name__ == "__main__":
    main()
