"""lm-evaluation-harness's `hf` model on a model that kivi.enable switched to KIVI caches, against
the same task scored through kivi-host serve (tests/serve/serve_lm_eval_test.py's task: 40
passages of Persuasion, each with its true next sentence among three word-shuffled copies)."""

import os
import sys

import pytest

from conftest import MODELS, REPO, kivi, load

lm_eval = pytest.importorskip("lm_eval")
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "serve"))
from serve_harness import Server  # noqa: E402
from serve_lm_eval_test import TASK  # noqa: E402

NAME = "kivi_word_order"


def evaluate(lm, tasks, **model_args):
    results = lm_eval.simple_evaluate(model=lm, model_args=model_args or None, tasks=[NAME],
                                      task_manager=TaskManager(include_path=str(tasks)),
                                      log_samples=True, bootstrap_iters=0)
    samples = sorted(results["samples"][NAME], key=lambda s: s["doc_id"])
    return results["results"][NAME], [[r[0][0] for r in s["resps"]] for s in samples]


def test_enabled_model_scores_as_transformers_and_the_server(tmp_path):
    host = os.environ.get("KIVI_HOST")
    if not host:
        pytest.skip("KIVI_HOST (the kivi-host binary) is not set; CTest sets it")
    data = REPO / "tests" / "serve" / "data" / "word_order.jsonl"
    (tmp_path / f"{NAME}.yaml").write_text(TASK.format(data=data))
    path = MODELS["llama"]
    tokenizer = AutoTokenizer.from_pretrained(path)

    def hf(model):
        return evaluate(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4,
                             max_length=4096), tmp_path)

    model = kivi.enable(load("llama", "sdpa"), k_bits=2, v_bits=2)
    made = []
    create = model.create_kivi_cache
    model.create_kivi_cache = lambda: made.append(1) or create()
    ours, our_lls = hf(model)
    assert made, "the hf model's forward passes did not take a KiviCache"
    plain, plain_lls = hf(load("llama", "sdpa"))

    server = Server(host, str(path), serve="max_batch = 4")
    try:
        served, _ = evaluate("local-completions", tmp_path, model="kivi-llama-tiny",
                             base_url=server.url + "/v1/completions", tokenizer=str(path),
                             tokenizer_backend="huggingface", tokenized_requests=True,
                             num_concurrent=4, max_retries=1, max_length=4096)
    finally:
        assert server.stop() == 0, "".join(server.output)
    # A log-likelihood request is one forward pass over context and continuation: KIVI's
    # prefill, in full precision, so every score equals transformers' own within float noise.
    assert len(our_lls) == len(plain_lls) == 40
    for doc, (a, b) in enumerate(zip(our_lls, plain_lls)):
        assert a == pytest.approx(b, abs=1e-3), f"doc {doc}: {a} (kivi.enable) vs {b} (sdpa)"
    # lm-eval's hf and local-completions models tokenize a request differently (context and
    # continuation apart, or whole), so their sums differ by up to ~1 nat; the choices agree.
    assert ours["acc,none"] == plain["acc,none"] == served["acc,none"] > 0.8
