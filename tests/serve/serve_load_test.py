"""tools/bench/serve_load.py's offline mode (the figures of docs/paged-cache.md) on the bundled tiny
Llama on the CPU: N requests at once under one memory budget, for a paged KIVI cache with and
without prefix sharing and for a full-precision cache. Checks what the figures rest on: every
request completes with all its tokens, the shared prefix is served from published pages only
when sharing is on (and then uses fewer pages), and the full-precision cache gets the rows that
the budget holds.

    python serve_load_test.py --kivi-host build/bin/kivi-host --source .
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

from serve_harness import run_tests

ARGS = None
N, PROMPT, PREFIX, NEW, BUDGET = 6, 48, 256, 6, 10_000_000


class OfflineLoadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        out = os.path.join(tempfile.mkdtemp(prefix="kivi-serve-load-test-"), "offline.json")
        cls.model = os.path.join(ARGS.source, "models", "kivi-llama-tiny")
        run = subprocess.run(
            [sys.executable, os.path.join(ARGS.source, "tools", "bench", "serve_load.py"), "--kivi-host",
             ARGS.kivi_host, "--model", cls.model, "--device", "cpu", "--offline", str(N), "--memory-budget",
             str(BUDGET), "--max-batch", "8", "--prompt-tokens", str(PROMPT), "--shared-prefix", str(PREFIX),
             "--max-tokens", str(NEW), "--caches", "kivi2,kivi2-noshare,fp32", "--json", out],
            capture_output=True, text=True, timeout=240)
        cls.stdout = run.stdout
        assert run.returncode == 0, run.stdout + run.stderr
        with open(out) as f:
            cls.report = json.load(f)
        cls.rows = {r["cache"]: r for r in cls.report["rows"]}

    def test_every_request_completes_with_all_its_tokens(self):
        for cache, r in self.rows.items():
            self.assertEqual((r["ok"], r["requests"]), (N, N), (cache, r["errors"]))
            self.assertAlmostEqual(r["output_tokens_per_s"] * r["wall_s"], N * NEW, delta=1e-6, msg=cache)
            self.assertGreater(r["ttft_p50_s"], 0, cache)

    def test_prefix_sharing_serves_the_prefix_from_published_pages(self):
        shared, unshared = self.rows["kivi2"], self.rows["kivi2-noshare"]
        self.assertGreater(shared["prefix_hit_rate"], 0.5)
        self.assertEqual(unshared["prefix_hit_rate"], 0)
        self.assertLess(shared["peak_pages_used"], unshared["peak_pages_used"])
        self.assertLessEqual(unshared["peak_pages_used"], unshared["pool_pages"])

    def test_the_full_precision_cache_gets_the_rows_the_budget_holds(self):
        with open(os.path.join(self.model, "config.json")) as f:
            c = json.load(f)
        dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        per_row = 2 * c["num_hidden_layers"] * c["num_key_value_heads"] * dim * 4 * (PREFIX + PROMPT + NEW)
        self.assertEqual(self.rows["fp32"]["max_batch"], min(8, N, BUDGET // per_row))
        self.assertEqual(self.rows["kivi2"]["max_batch"], N)  # slots: no more than the requests

    def test_the_report_is_a_table(self):
        self.assertIn("| cache | rows | ok | out tok/s |", self.stdout)
        self.assertIn(f"after a shared prefix of {PREFIX}", self.stdout)


if __name__ == "__main__":
    run_tests(sys.modules[__name__])
