"""kivi.KiviCache inside transformers, against transformers' own DynamicCache and against
kivi-host (the C++ engine) on the bundled tiny Llama and Qwen2 models."""

import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, DynamicCache

from conftest import DEVICE, MODELS, REPO, kivi, load

NEW_TOKENS = 24


def prompt_ids(tokenizer, text, tokens, offset=0):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][offset:offset + tokens]
    assert len(ids) == tokens
    return ids


def greedy(model, ids, cache, new_tokens=NEW_TOKENS, **kw):
    input_ids = torch.tensor([ids], device=DEVICE)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                         past_key_values=cache, max_new_tokens=new_tokens, do_sample=False,
                         min_new_tokens=new_tokens, pad_token_id=model.config.pad_token_id, **kw)
    return out[:, len(ids):].tolist()


@pytest.fixture(scope="module")
def models(family):
    return {"kivi": load(family, "kivi"), "sdpa": load(family, "sdpa")}


def test_full_precision_equals_dynamic_cache(family, models, tokenizer, text):
    # 16-bit keys and values: the plugin stores them unquantized, so greedy tokens must equal
    # transformers' DynamicCache with its own SDPA attention, past the 128-token window too.
    ids = prompt_ids(tokenizer, text, 160)
    cache = kivi.create_kivi_cache(models["kivi"], k_bits=16, v_bits=16)
    assert greedy(models["kivi"], ids, cache) == greedy(models["sdpa"], ids, DynamicCache())
    assert cache.lengths() == [160 + NEW_TOKENS - 1]  # the last token is sampled, not stored


def test_left_padded_batch_equals_dynamic_cache(family, models, tokenizer, text):
    # Rows of different lengths, left-padded as generate() pads a batch: the padding is never
    # stored, and each row decodes as it would with transformers' cache.
    rows = [prompt_ids(tokenizer, text, n, offset=o) for n, o in ((150, 0), (97, 400), (40, 900))]
    width = max(map(len, rows))
    pad = models["kivi"].config.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=DEVICE)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=DEVICE)

    def run(model, cache):
        out = model.generate(input_ids, attention_mask=mask, past_key_values=cache,
                             max_new_tokens=16, min_new_tokens=16, do_sample=False,
                             pad_token_id=pad)
        return out[:, width:].tolist()

    cache = kivi.create_kivi_cache(models["kivi"], k_bits=16, v_bits=16)
    assert run(models["kivi"], cache) == run(models["sdpa"], DynamicCache())
    assert cache.lengths() == [len(r) + 15 for r in rows]


def kivi_host_tokens(family, ids, bits, new_tokens, folder):
    """Greedy tokens of kivi-host generate, same model, prompt ids and KIVI settings."""
    host = os.environ.get("KIVI_HOST")
    if not host:
        pytest.skip("KIVI_HOST (the kivi-host binary) is not set; CTest sets it")
    config = f"""mode = "generate"
[model]
path = "{MODELS[family]}"
device = "{DEVICE}"
dtype = "float32"
[cache]
backend = "kivi"
k_bits = {bits}
v_bits = {bits}
group_size = 32
residual_length = 128
[generate]
prompt_ids = {ids}
max_new_tokens = {new_tokens}
cache_stats = false
"""
    (folder / "run.toml").write_text(config)
    out = subprocess.run([host, "--config", str(folder / "run.toml")], text=True,
                         capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    match = re.search(r"^prompt 0 \(\d+ tokens\) -> \d+ new tokens \[\w+\]:((?: \d+)*)$",
                      out.stdout, re.M)
    assert match, out.stdout
    return [int(t) for t in match.group(1).split()]


@pytest.mark.parametrize("bits", [2, 4])
def test_quantized_equals_kivi_host(family, models, tokenizer, text, bits, tmp_path):
    # 200 prompt tokens: 64 of them leave the full-precision window at once and are quantized
    # (groups of 32), more during decoding. The same plugin stores them in both programs.
    ids = prompt_ids(tokenizer, text, 200)
    model = models["kivi"]
    cache = kivi.create_kivi_cache(model, k_bits=bits, v_bits=bits)
    input_ids = torch.tensor([ids], device=DEVICE)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                         past_key_values=cache, max_new_tokens=40, do_sample=False,
                         pad_token_id=model.config.pad_token_id)
    ours = out[0, len(ids):].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    for i, token in enumerate(ours):  # kivi-host keeps the EOS and stops; generate pads after
        if token in eos:
            ours = ours[:i + 1]
            break
    assert cache.get_cache_info()["layers"][0]["quantized_tokens"] >= 64
    assert ours == kivi_host_tokens(family, ids, bits, 40, tmp_path)


def test_beam_search_reorders(family, models, tokenizer, text):
    ids = prompt_ids(tokenizer, text, 140)
    reorders = []

    class Counting(kivi.KiviCache):
        def reorder_cache(self, beam_idx):
            reorders.append(beam_idx.tolist())
            super().reorder_cache(beam_idx)

    def beams(model, cache):
        input_ids = torch.tensor([ids], device=DEVICE)
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                             past_key_values=cache, num_beams=3, num_return_sequences=3,
                             max_new_tokens=12, min_new_tokens=12, do_sample=False,
                             pad_token_id=model.config.pad_token_id)
        return out[:, len(ids):].tolist()

    n = models["kivi"].config.num_hidden_layers
    assert beams(models["kivi"], Counting(n, 16, 16)) == beams(models["sdpa"], DynamicCache())
    assert reorders and any(r != sorted(r) for r in reorders), "no beam changed its history"
    quantized = Counting(n, 2, 2)
    assert len(beams(models["kivi"], quantized)) == 3
    assert quantized.batch_size == 3


def test_cache_info_counts_the_plugins_storage(family, models, tokenizer, text):
    ids = prompt_ids(tokenizer, text, 300)
    cache = kivi.create_kivi_cache(models["kivi"], k_bits=2, v_bits=2)
    greedy(models["kivi"], ids, cache, new_tokens=8)
    info = cache.get_cache_info()
    owned = sum(t.untyped_storage().nbytes() for _, t in cache.owned_tensors())
    assert info["bytes"]["total"] == owned > 0
    layer = info["layers"][0]
    assert layer["tokens"] == 300 + 7
    assert layer["quantized_tokens"] + layer["residual_tokens"] >= layer["tokens"]
    assert layer["quantized_tokens"] % 32 == 0 and layer["quantized_tokens"] >= 300 - 128 - 31
    # Real 2-bit storage: the codes take 2 bits per quantized key or value element.
    usage, config = info["usage"], models["kivi"].config
    per_token = config.num_hidden_layers * config.num_key_value_heads * config.head_dim
    quantized = usage["key_quantized"] + usage["value_quantized"]
    assert quantized > 0 and usage["code_bytes"] == quantized * per_token * 2 // 8
    printed = kivi.print_kivi_stats(cache, file=open(os.devnull, "w"))
    assert printed["bytes"] == info["bytes"]


def test_uncached_forward_equals_sdpa(family, models, tokenizer, text):
    ids = torch.tensor([prompt_ids(tokenizer, text, 90)], device=DEVICE)
    with torch.no_grad():
        ours = models["kivi"](ids, use_cache=False).logits
        theirs = models["sdpa"](ids, use_cache=False).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_crop_and_reset(family, models, tokenizer, text):
    ids = prompt_ids(tokenizer, text, 50)
    cache = kivi.create_kivi_cache(models["kivi"], k_bits=4, v_bits=4)
    greedy(models["kivi"], ids, cache, new_tokens=6)
    assert cache.get_seq_length() == 55
    cache.crop(-5)
    assert cache.get_seq_length() == 50 and cache.lengths() == [50]
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.lengths() == [0]
    # The emptied cache serves the same prompt again, with the same tokens.
    first = greedy(models["kivi"], ids, kivi.create_kivi_cache(models["kivi"], 4, 4), 6)
    assert greedy(models["kivi"], ids, cache, new_tokens=6) == first


def test_enable_uses_a_kivi_cache(family, tokenizer, text):
    model = kivi.enable(load(family, "sdpa"), k_bits=2, v_bits=2)
    assert model.config._attn_implementation == "kivi"
    ids = prompt_ids(tokenizer, text, 170)
    input_ids = torch.tensor([ids], device=DEVICE)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=8,
                         min_new_tokens=8, do_sample=False, return_dict_in_generate=True,
                         pad_token_id=model.config.pad_token_id)
    assert isinstance(out.past_key_values, kivi.KiviCache)
    assert out.past_key_values.get_cache_info()["layers"][0]["quantized_tokens"] > 0
    assert isinstance(model.create_kivi_cache(), kivi.KiviCache)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k_bits=3), "k_bits = 3 is not supported"),
    (dict(v_bits=1), "v_bits = 1 is not supported"),
    (dict(group_size=0), "group_size = 0 is out of range"),
    (dict(residual_length=100), "residual_length = 100 must be 0 or a multiple of group_size"),
    (dict(group_size=12, residual_length=0), "group_size = 12 with k_bits = 2 must be a multiple of 16"),
    # Checked by the plugin itself, its message passed on.
    (dict(cache_options={"chunk_tokens": 0}), "chunk_tokens"),
    (dict(cache_plugin="fp8"), "fp8"),
    (dict(attention_options={"block_tokens": 0}), "block_tokens"),
    (dict(cache_options={"chunk_tokens": True}), "chunk_tokens"),
])
def test_bad_settings_raise_value_errors(family, models, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        kivi.create_kivi_cache(models["kivi"], **kwargs)


def test_unserved_family_raises_value_error():
    from transformers import GPT2Config, GPT2LMHeadModel
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not served"):
        kivi.create_kivi_cache(model)
    with pytest.raises(ValueError, match="model_type 'gpt2' is not served"):
        kivi.enable(model)


def test_cache_without_kivi_attention_is_refused(family, models, tokenizer, text):
    ids = torch.tensor([prompt_ids(tokenizer, text, 10)], device=DEVICE)
    cache = kivi.create_kivi_cache(models["sdpa"])
    with pytest.raises(RuntimeError, match="attn_implementation='kivi'"):
        models["sdpa"](ids, past_key_values=cache)


def test_chunked_perplexity_equals_kivi_host_compare(tmp_path):
    # kivi-host compare (configs/demo-compare.toml: one 1024-token window of Persuasion, fed 128
    # tokens at a time, each chunk attending to the cache as stored) against the same text through
    # transformers with a KiviCache: every chunk after the first reads older tokens quantized.
    host = os.environ.get("KIVI_HOST")
    if not host:
        pytest.skip("KIVI_HOST (the kivi-host binary) is not set; CTest sets it")
    if DEVICE != "cpu":
        pytest.skip("on a GPU kivi-host compare runs the checkpoint's bfloat16, these float32")
    out = subprocess.run([host, "--config", str(REPO / "configs" / "demo-compare.toml")],
                         text=True, capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    theirs = {m.group(1): float(m.group(2))
              for m in re.finditer(r"^(kivi-[24]|fp32) +\S+ +\S+ +([\d.]+)", out.stdout, re.M)}
    assert set(theirs) == {"fp32", "kivi-4", "kivi-2"}, out.stdout

    sys.path.insert(0, str(REPO / "tools" / "bench"))
    from hf_cache_ppl import perplexity
    tokenizer = AutoTokenizer.from_pretrained(MODELS["llama"])
    ids = tokenizer((REPO / "data" / "persuasion-ch1-6.txt").read_text(),
                    return_tensors="pt").input_ids[:, :1024].to(DEVICE)
    model = load("llama", "kivi")
    for name, bits in (("fp32", 16), ("kivi-4", 4), ("kivi-2", 2)):
        with torch.inference_mode():
            ours = perplexity(model, ids, kivi.create_kivi_cache(model, bits, bits), 128)
        assert ours == pytest.approx(theirs[name], abs=2e-3), name
