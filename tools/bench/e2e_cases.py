"""Reads the end-to-end decode results: tools/gpu/run-e2e.sh's e2e.json (kivi-host bench cases)
and tools/bench/hf_decode_bench.py's JSON (transformers cases), into one list of dicts with a
display label ("kivi bf16", "kivi KIVI-2", "HF dynamic", ...). Shared by e2e_table.py and
plot_e2e.py."""
import json


def label(case):
    if case.get("engine") == "transformers":
        return "HF " + case["cache"]
    name = case.get("cache_label", case.get("cache", "?"))
    return "kivi " + (f"KIVI-{name.split(':')[1]}" if name.startswith("kivi:") else name)


def load(paths):
    cases = []
    for path in paths:
        doc = json.load(open(path))
        items = doc["cases"] if isinstance(doc, dict) and "cases" in doc else doc if isinstance(doc, list) else [doc]
        for case in items:
            case = dict(case)
            case["label"] = label(case)
            case.setdefault("cuda_graphs", None)  # transformers' cases: not a kivi setting
            cases.append(case)
    return cases


def timed(case):
    """A case that ran and was timed (not a largest-batch search, not out of memory)."""
    return case.get("decode_tokens_per_s") is not None and not case.get("failed") and not case.get("oom")
