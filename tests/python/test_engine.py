"""kivi.Engine: kivi-host's modes from Python. Its results must be kivi-host's own (same config,
same numbers), its model loads once and serves per-call caches, and bad settings raise
ValueError with kivi-host's message."""

import json
import os
import re
import subprocess

import pytest

from conftest import DEVICE, MODELS, REPO, kivi

DEMO_COMPARE = REPO / "configs" / "demo-compare.toml"
TEXT = REPO / "data" / "persuasion-ch1-6.txt"


def kivi_host(*args):
    host = os.environ.get("KIVI_HOST")
    if not host:
        pytest.skip("KIVI_HOST (the kivi-host binary) is not set; CTest sets it")
    out = subprocess.run([host, *map(str, args)], text=True, capture_output=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def engine():
    """The bundled Llama with the default KIVI-2 cache, on the tests' device."""
    return kivi.Engine(MODELS["llama"], device=DEVICE, dtype="float32")


def test_compare_equals_kivi_host_compare(tmp_path):
    out = tmp_path / "compare.json"
    kivi_host("--config", DEMO_COMPARE, "--set", f"output.json={json.dumps(str(out))}",
              "--set", f"model.device={DEVICE}")
    theirs = json.loads(out.read_text())
    ours = kivi.Engine.from_config(DEMO_COMPARE, **{"model.device": DEVICE}).compare()
    assert ours.scored_tokens == theirs["scored_tokens"] == 1023
    assert [v.name for v in ours.variants] == ["fp32", "kivi-4", "kivi-2"]
    for v, t in zip(ours.variants, theirs["variants"]):
        assert v.perplexity == pytest.approx(t["perplexity"], rel=1e-9), v.name
        assert v.kl == pytest.approx(t["kl"], rel=1e-6, abs=1e-12), v.name
        assert v.top1_agreement == t["top1_agreement"], v.name
        assert v.greedy == t["greedy"], v.name
        assert v.cache_bytes == t["cache_bytes"], v.name
    assert "| kivi-2 | kivi |" in ours.table()


def host_generate_tokens(extra_sets):
    """Token ids of kivi-host generate on configs/demo-compare.toml's model, one list per prompt."""
    stdout = kivi_host("generate", "--config", DEMO_COMPARE, "--set", f"model.device={DEVICE}",
                       "--set", "model.dtype=float32", *extra_sets)
    return [[int(t) for t in m.group(1).split()]
            for m in re.finditer(r"^prompt \d+ \(\d+ tokens\) -> \d+ new tokens \[\w+\]:((?: \d+)*)$", stdout, re.M)]


def test_generate_equals_kivi_host_generate(engine):
    prompts = ["Anne Elliot", "Sir Walter Elliot, of Kellynch Hall", TEXT.read_text()[:1500]]
    for bits in (2, 4):
        sets = ["--set", f"generate.prompts={json.dumps(prompts)}", "--set", "generate.max_new_tokens=20",
                "--set", "cache.backend=kivi", "--set", f"cache.k_bits={bits}", "--set", f"cache.v_bits={bits}"]
        theirs = host_generate_tokens(sets)
        ours = engine.generate(prompts, max_new_tokens=20,
                               cache={"backend": "kivi", "k_bits": bits, "v_bits": bits})
        assert [g.tokens for g in ours.generations] == theirs, bits
        assert ours.new_tokens == 60 and ours.cache_bytes > 0 and ours.seconds > 0
        assert all(g.stop == "max_new_tokens" for g in ours.generations)
        assert ours.generations[2].prompt_tokens > 128  # past the full-precision window


def test_model_loads_once_and_caches_swap_per_call(engine):
    first = engine.generate("Anne Elliot", max_new_tokens=16)
    described = engine.describe()
    fp32 = engine.generate("Anne Elliot", max_new_tokens=16, cache="fp32", attention="sdpa")
    assert "cache kivi" in described and "attention kivi" in described
    assert engine.describe(cache="fp32", attention="sdpa").endswith("attention sdpa, cache fp32")
    # Back to the default cache: the same tokens as the first call, so nothing carried over.
    assert engine.generate("Anne Elliot", max_new_tokens=16).generations[0].tokens == first.generations[0].tokens
    assert fp32.cache_bytes > first.cache_bytes  # fp32 K/V against packed 2-bit codes


def test_streamed_pieces_make_the_text(engine):
    seen = []
    out = engine.generate(["Anne Elliot", "Lady Russell"], max_new_tokens=12,
                          on_token=lambda row, token, text: seen.append((row, token, text)))
    for row, g in enumerate(out.generations):
        assert [t for r, t, _ in seen if r == row] == g.tokens
        assert "".join(s for r, _, s in seen if r == row) == g.text


def test_beam_search_returns_ranked_hypotheses(engine):
    out = engine.generate("Anne Elliot", max_new_tokens=10, num_beams=3)
    best = out.generations[0]
    assert len(out.generations) == 1 and len(best.hypotheses) == 3
    scores = [h.score for h in best.hypotheses]
    assert scores == sorted(scores, reverse=True) and best.score == scores[0]
    assert best.tokens == best.hypotheses[0].tokens


def test_perplexity_equals_compare_variant(engine):
    # float32 as the engine fixture (on a GPU the config's dtype "auto" would be bfloat16)
    theirs = kivi.Engine.from_config(DEMO_COMPARE, **{"model.device": DEVICE, "model.dtype": "float32"}).compare()
    for variant, cache in ((1, {"backend": "kivi", "k_bits": 4, "v_bits": 4}), (2, "kivi")):
        ours = engine.perplexity(TEXT, context=1024, chunk=128, max_windows=1, cache=cache)
        assert ours.tokens == 1023 and ours.windows == 1 and ours.text_tokens > 20000
        assert ours.perplexity == pytest.approx(theirs.variants[variant].perplexity, rel=1e-9)


@pytest.mark.parametrize("make, call, message", [
    (lambda: kivi.Engine(MODELS["llama"], colour="red"), None, "unknown argument 'colour'"),
    (lambda: kivi.Engine(MODELS["llama"], cache={"backend": "kivi", "k_bits": 3}), None, "k_bits: 3 is not allowed"),
    (lambda: kivi.Engine(MODELS["llama"], cache="no-such-cache"), None, "no-such-cache"),
    (lambda: kivi.Engine.from_config(REPO / "configs" / "missing.toml"), None, "missing.toml"),
    (lambda: kivi.Engine(), lambda e: e.generate("Hi"), "needs a [model] table"),
    (lambda: kivi.Engine(MODELS["llama"], device=DEVICE), lambda e: e.generate("Hi", temperature=-1),
     "temperature = -1"),
    (lambda: kivi.Engine(MODELS["llama"], device=DEVICE), lambda e: e.generate("Hi", max_new_tokenz=3),
     "max_new_tokenz"),
    (lambda: kivi.Engine(MODELS["llama"], device=DEVICE), lambda e: e.perplexity(REPO / "no-such.txt"),
     "no-such.txt"),
])
def test_bad_settings_raise_value_error(make, call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        engine = make()
        call(engine)
