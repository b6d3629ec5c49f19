"""kivi.Engine: kivi-host's generate, perplexity and compare from a script, with the model loaded
once and kept (the C++ engine of kivi-host, in this process; no transformers involved).

    engine = kivi.Engine.from_config("configs/demo.toml")        # a kivi-host run.toml
    engine = kivi.Engine("models/kivi-llama-tiny", cache={"backend": "kivi", "k_bits": 2})
    out = engine.generate("Once upon a time", max_new_tokens=32)
    print(out.text, out.tokens_per_s)
    print(engine.perplexity("data/persuasion-ch1-6.txt", context=512).perplexity)
    print(engine.compare([{"name": "fp16", "cache": {"backend": "fp16"}},
                          {"name": "kivi-2", "cache": {"backend": "kivi", "k_bits": 2, "v_bits": 2}}],
                         text="data/persuasion-ch1-6.txt").table())

Keyword arguments of each call are that mode's run.toml keys ([generate], [perplexity]), applied
for that call alone; `cache=` and `attention=` put another cache in for that call. Bad settings
raise ValueError with kivi-host's message (file, key, value and what was expected).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable

from . import _C
from ._native import KiviError, plugin_dirs

# The run.toml keys that Engine(...) puts into [model] rather than another table.
MODEL_KEYS = ("dtype", "device", "weights", "seed", "cuda_graphs")


@dataclass
class Generation:
    """One prompt's continuation (the best hypothesis for beam search)."""
    text: str
    tokens: list[int]
    prompt_tokens: int
    stop: str  # why it ended: "eos", "max_new_tokens", "stop_string", "context"
    score: float = 0.0  # beam search: the length-penalized log-probability
    hypotheses: list["Generation"] = field(default_factory=list)  # beam search, best first


@dataclass
class GenerateResult:
    generations: list[Generation]
    new_tokens: int
    seconds: float
    cache_bytes: int  # the most a batch's cache held
    model: str

    @property
    def text(self) -> str:
        """The first prompt's continuation."""
        return self.generations[0].text

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float  # nats per scored token
    tokens: int  # scored tokens
    text_tokens: int
    windows: int
    context: int
    stride: int
    seconds: float
    cache_bytes: int
    bits_per_element: float
    model: str
    text: str

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class CompareVariant:
    name: str
    cache: str
    attention: str
    perplexity: float
    perplexity_change: float  # against the first variant (0.01 = +1%)
    kl: float  # KL(first || this) of the next-token distributions, nats per token
    top1_agreement: float
    greedy_agreement: float
    cache_bytes: int
    bits_per_element: float
    peak_rss_bytes: int
    score_tokens_per_s: float
    decode_tokens_per_s: float
    greedy: list[list[int]]


@dataclass
class CompareResult:
    variants: list[CompareVariant]
    scored_tokens: int
    model: str
    text: str

    def table(self) -> str:
        """The variants as a Markdown table."""
        lines = ["| variant | cache | perplexity | change | KL | top-1 | greedy | cache bytes | bits |",
                 "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for v in self.variants:
            lines.append(f"| {v.name} | {v.cache} | {v.perplexity:.3f} | {100 * v.perplexity_change:+.2f}% | "
                         f"{v.kl:.6f} | {100 * v.top1_agreement:.2f}% | {100 * v.greedy_agreement:.1f}% | "
                         f"{v.cache_bytes} | {v.bits_per_element:.2f} |")
        return "\n".join(lines)


def toml_value(value: Any, where: str) -> str:
    """A Python value as a TOML value: bool, int, float, str, list, dict (an inline table)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        return json.dumps(os.fspath(value))  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v, where) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v, where)}" for k, v in value.items()) + "}"
    raise ValueError(f"kivi.Engine: {where} = {value!r}: expected a bool, number, string, list or dict")


def plugin_table(value: str | dict | None, where: str) -> dict:
    """cache= / attention=: a backend name, or a dict with "backend" and the plugin's options."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"backend": value}
    if isinstance(value, dict) and "backend" in value:
        return dict(value)
    raise ValueError(f"kivi.Engine: {where} = {value!r}: expected a backend name or a dict with "
                     "\"backend\" and that plugin's options")


def overrides(table: str, options: dict) -> list[str]:
    """{"max_new_tokens": 8} -> ["generate.max_new_tokens=8"] (kivi-host's --set)."""
    return [f"{table}.{key}={toml_value(v, f'{table}.{key}')}" for key, v in options.items()]


def plugin_overrides(cache, attention) -> list[str]:
    out = []
    for table, value in (("cache", cache), ("attention", attention)):
        out += overrides(table, plugin_table(value, table))
    return out


def native_call(fn, *args):
    try:
        return json.loads(fn(*args))
    except KiviError as e:
        raise ValueError(str(e)) from None


def from_json(cls, doc: dict, **extra):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in doc.items() if k in names}, **extra)


class Engine:
    """kivi-host's engine in this process: one model, loaded at the first call and kept."""

    def __init__(self, model: str | os.PathLike | None = None, *, cache: str | dict | None = None,
                 attention: str | dict | None = None, _native=None, **settings):
        """From keyword arguments: `model` a checkpoint folder (or GGUF file); `cache` and
        `attention` a plugin name or {"backend": name, **options}; dtype, device, weights, seed,
        cuda_graphs go to [model]; generate={...}, perplexity={...} are those tables' defaults."""
        if _native is not None:
            self._native = _native
            return
        tables: dict[str, dict] = {"model": {}}
        if model is not None:
            tables["model"]["path"] = os.path.abspath(os.fspath(model))
        for key, value in settings.items():
            if key in MODEL_KEYS:
                tables["model"][key] = value
            elif key in ("generate", "perplexity") and isinstance(value, dict):
                tables[key] = dict(value)
            else:
                raise ValueError(f"kivi.Engine: unknown argument {key!r}; expected cache, attention, "
                                 f"{', '.join(MODEL_KEYS)}, generate or perplexity (or use Engine.from_config)")
        tables["cache"] = plugin_table(cache, "cache")
        tables["attention"] = plugin_table(attention, "attention")
        if "text" in tables.get("perplexity", {}):
            tables["perplexity"]["text"] = os.path.abspath(os.fspath(tables["perplexity"]["text"]))
        text = "".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v, f'{name}.{k}')}\n" for k, v in t.items())
                       for name, t in tables.items() if t)
        source = os.path.join(os.getcwd(), "kivi.Engine(...)")
        try:
            self._native = _C.NativeEngine.from_text(text, source, ["plugins.default_dir=false"], plugin_dirs())
        except KiviError as e:
            raise ValueError(str(e)) from None

    @classmethod
    def from_config(cls, path: str | os.PathLike, **sets) -> "Engine":
        """From a kivi-host run.toml; `sets` are --set overrides: from_config("run.toml",
        **{"cache.k_bits": 4})."""
        extra = [f"{key}={toml_value(v, key)}" for key, v in sets.items()]
        try:
            native = _C.NativeEngine.from_file(os.fspath(path), extra + ["plugins.default_dir=false"],
                                               plugin_dirs())
        except KiviError as e:
            raise ValueError(str(e)) from None
        return cls(_native=native)

    def describe(self, cache=None, attention=None) -> str:
        """The model as loaded (loads it): "model: <path> (family llama, ...), cache kivi"."""
        try:
            return self._native.describe(plugin_overrides(cache, attention))
        except KiviError as e:
            raise ValueError(str(e)) from None

    def generate(self, prompts: str | Iterable[str] | None = None, *, prompt_ids: list | None = None,
                 cache=None, attention=None, on_token: Callable[[int, int, str], None] | None = None,
                 **options) -> GenerateResult:
        """Continuations of `prompts` (text) and/or `prompt_ids` (one list of ids, or a list of
        them); without either, run.toml's [generate] prompts. `options` are [generate] keys
        (max_new_tokens, temperature, top_k, top_p, num_beams, stop, seed, ...). on_token(row,
        token, text) sees each new token as it comes (the text it completed, maybe "")."""
        texts = [prompts] if isinstance(prompts, str) else list(prompts or [])
        ids = prompt_ids or []
        if ids and isinstance(ids[0], int):
            ids = [ids]
        pieces = {}

        def token(row, tok, piece: bytes):  # pieces may split a UTF-8 character: join first
            data = pieces.get(row, b"") + piece
            try:
                text = data.decode("utf-8")
                pieces[row] = b""
            except UnicodeDecodeError:
                pieces[row], text = data, ""
            on_token(row, tok, text)

        doc = native_call(self._native.generate, overrides("generate", options) + plugin_overrides(cache, attention),
                          texts, [list(map(int, p)) for p in ids], token if on_token else None)
        gens = []
        for g in doc["generations"]:
            hyps = [from_json(Generation, h, prompt_tokens=g["prompt_tokens"]) for h in g.get("hypotheses", [])]
            gens.append(Generation(g["text"], g["tokens"], g["prompt_tokens"], g["stop"], g["score"], hyps))
        return GenerateResult(gens, doc["new_tokens"], doc["seconds"], doc["cache_bytes"], doc["model"])

    def perplexity(self, text: str | os.PathLike | None = None, *, cache=None, attention=None,
                   **options) -> PerplexityResult:
        """Windowed perplexity of the text file `text` (else run.toml's [perplexity] text);
        `options` are [perplexity] keys (context, stride, max_windows, max_tokens, chunk)."""
        options.setdefault("progress", False)
        if text is not None:
            options["text"] = os.path.abspath(os.fspath(text))
        doc = native_call(self._native.perplexity,
                          overrides("perplexity", options) + plugin_overrides(cache, attention))
        return from_json(PerplexityResult, doc)

    def compare(self, variants: list[dict] | None = None, *, text: str | os.PathLike | None = None,
                prompts: Iterable[str] | None = None, generate: dict | None = None,
                **options) -> CompareResult:
        """kivi-host compare: each variant ({"name", "cache": name or {backend, options},
        "attention"}) on the same text windows (`text`, `options` as perplexity's) and greedy
        continuations of `prompts`, against the first. Without `variants`, run.toml's."""
        options.setdefault("progress", False)
        if text is not None:
            options["text"] = os.path.abspath(os.fspath(text))
        sets = overrides("perplexity", options) + overrides("generate", dict(generate or {}))
        if prompts is not None:
            sets += overrides("generate", {"prompts": list(prompts)})
        if variants is not None:
            tables = []
            for i, v in enumerate(variants):
                v = dict(v)
                for key in ("cache", "attention"):
                    if key in v:
                        v[key] = plugin_table(v[key], f"variants[{i}].{key}")
                tables.append(v)
            sets.append(f"compare.variants={toml_value(tables, 'variants')}")
        doc = native_call(self._native.compare, sets)
        return CompareResult([from_json(CompareVariant, v) for v in doc["variants"]], doc["scored_tokens"],
                             doc["model_description"], doc["text"])
