"""lm-evaluation-harness's `local-completions` model scoring a small log-likelihood task against
kivi-host serve: 40 passages of Persuasion (held out from training), each with its true next
sentence among three word-shuffled copies of it (data/word_order.jsonl, built by
tools/fixtures/make_serve_task.py).
lm-eval tokenizes with the model folder's tokenizer, sends token ids with echo + logprobs and
sums the continuation's log-probabilities (its loglikelihood requests). Checked: every request
is answered, accuracy beats chance, and one answer's log-likelihood equals a direct request.

    python serve_lm_eval_test.py --kivi-host build/bin/kivi-host --source .
"""
import json
import os
import sys
import tempfile
import unittest

from serve_harness import SKIP, Server, run_tests

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
try:
    import lm_eval
    from lm_eval.tasks import TaskManager
    from transformers import AutoTokenizer
except ImportError as e:  # the GPU machine's python has no lm-eval
    print(f"skipped: {e}")
    sys.exit(SKIP)

ARGS = None
TASK = """task: kivi_word_order
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


class LmEvalTest(unittest.TestCase):
    def test_local_completions_scores_the_task(self):
        model = os.path.abspath(os.path.join(ARGS.source, "models", "kivi-llama-tiny"))
        data = os.path.abspath(os.path.join(ARGS.source, "tests", "serve", "data", "word_order.jsonl"))
        tasks = tempfile.mkdtemp(prefix="kivi-lm-eval-")
        with open(os.path.join(tasks, "kivi_word_order.yaml"), "w") as f:
            f.write(TASK.format(data=data))
        server = Server(ARGS.kivi_host, model, serve="max_batch = 4")
        try:
            results = lm_eval.simple_evaluate(
                model="local-completions",
                model_args={"model": "kivi-llama-tiny", "base_url": server.url + "/v1/completions",
                            "tokenizer": model, "tokenizer_backend": "huggingface", "tokenized_requests": True,
                            "num_concurrent": 4, "max_retries": 1, "max_length": 4096},
                tasks=["kivi_word_order"], task_manager=TaskManager(include_path=tasks), log_samples=True,
                bootstrap_iters=0)
            metrics = results["results"]["kivi_word_order"]
            print(json.dumps(metrics, indent=1))
            samples = results["samples"]["kivi_word_order"]
            self.assertEqual(len(samples), 40)
            self.assertGreater(metrics["acc,none"], 0.8)  # chance is 0.25; the model gets 1.0

            # The first sample's first choice, scored directly: lm-eval's number must be ours.
            doc = samples[0]["doc"]
            tok = AutoTokenizer.from_pretrained(model)
            context = tok(doc["context"], add_special_tokens=False).input_ids
            whole = tok(doc["context"] + " " + doc["choices"][0], add_special_tokens=False).input_ids
            status, reply = server.post("/v1/completions", json.dumps(
                {"prompt": whole, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0}))
            self.assertEqual(status, 200)
            direct = sum(reply["choices"][0]["logprobs"]["token_logprobs"][len(context):])
            lm_eval_ll = samples[0]["resps"][0][0][0]
            self.assertAlmostEqual(lm_eval_ll, direct, delta=1e-3)
        finally:
            self.assertEqual(server.stop(), 0, "".join(server.output))


if __name__ == "__main__":
    run_tests(sys.modules[__name__])
