"""kivi-host serve with a paged KIVI cache ([cache] memory_budget) on the bundled tiny Llama: the
pool the budget buys, /metrics in the Prometheus text format, a request larger than the whole
pool refused with a 400 while the server keeps serving, a repeated prompt served from the first
one's pages, and concurrent requests that run the pool dry: rows are preempted and recomputed,
every request completes, and no page stays used.

    python serve_paged_test.py --kivi-host build/bin/kivi-host --source .
"""
import concurrent.futures
import json
import os
import re
import unittest
import urllib.request

from serve_harness import Server, run_tests

ARGS = None
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. However little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
        "surrounding families, that he is considered the rightful property of some one or other of "
        "their daughters. ")


def model_dir():
    return os.path.abspath(os.path.join(ARGS.source, "models", "kivi-llama-tiny"))


def metrics(server):
    """{name: value} of the plain samples of GET /metrics."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(kivi:[a-z_]+(?:\{[^}]*\})?) (\S+)", line)
        if m:
            values[m.group(1)] = float(m.group(2))
    return values


class PagedServeTest(unittest.TestCase):
    """One server: KIVI-4 in pages of 32 tokens, 6 rows, a budget of about 20 pages (small, so that
    the preemption test stays short under a sanitizer's slowdown)."""

    @classmethod
    def setUpClass(cls):
        cache = ('[cache]\nbackend = "kivi"\nk_bits = 4\nv_bits = 4\npage_tokens = 32\n'
                 'residual_length = 32\nmemory_budget = "2MB"\n')
        cls.server = Server(ARGS.kivi_host, model_dir(), serve="max_batch = 6\nmax_queue = 64", extra=cache)

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, "".join(cls.server.output)

    def complete(self, prompt, max_tokens):
        return self.server.post("/v1/completions", json.dumps({
            "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}))

    def wait_until_idle(self, seconds):
        health = self.server.wait_until_idle(seconds)
        self.assertEqual((health["active"], health["queued"]), (0, 0))
        return health

    def test_the_budget_buys_a_pool_and_metrics_show_it(self):
        start = "".join(self.server.output)
        pages = int(re.search(r"cache pool (\d+) pages of 32 tokens", start).group(1))
        self.assertGreater(pages, 10)
        m = metrics(self.server)
        self.assertEqual(m["kivi:cache_pages"], pages)
        self.assertEqual(m["kivi:max_batch"], 6)
        for name in ("kivi:num_requests_running", "kivi:num_requests_waiting", "kivi:cache_pages_used",
                     "kivi:cache_pages_peak", "kivi:cache_pages_free", "kivi:num_preemptions_total", "kivi:generation_tokens_total",
                     "kivi:time_to_first_token_seconds_count", 'kivi:time_per_output_token_seconds_bucket{le="+Inf"}'):
            self.assertIn(name, m)
        # KIVI-4 in pages: a page's bytes per token, well under fp32's 2 x 6 layers x 2 heads x 64 x 4.
        self.assertGreater(m["kivi:cache_bytes_per_token"], 0)
        self.assertLess(m["kivi:cache_bytes_per_token"], 6144 / 4)

    def test_a_request_larger_than_the_pool_is_a_400_and_the_server_keeps_serving(self):
        pages = int(self.server.get("/health")["cache_pages"])
        status, body = self.complete(TEXT, max_tokens=32 * pages + 64)
        self.assertEqual(status, 400, body)
        self.assertIn("cache pages of 32 tokens", body["error"]["message"])
        self.assertIn(f"whole cache holds {pages}", body["error"]["message"])
        status, body = self.complete("Anne", max_tokens=3)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["usage"]["completion_tokens"], 3)

    def test_a_repeated_prompt_takes_the_pages_of_the_first(self):
        before = metrics(self.server)["kivi:prefix_cache_hits_total"]
        prompt = "Shared. " + TEXT * 2
        first = self.complete(prompt, 4)
        second = self.complete(prompt, 4)
        self.assertEqual((first[0], second[0]), (200, 200))
        # The second prompt's whole pages but the last R tokens (and a whole key flush) were found.
        self.assertGreaterEqual(metrics(self.server)["kivi:prefix_cache_hits_total"] - before, 64)
        self.assertGreater(self.server.get("/health")["prefix_hit_rate"], 0)

    def test_requests_that_run_the_pool_dry_are_preempted_and_all_complete(self):
        pages = int(self.server.get("/health")["cache_pages"])
        before = metrics(self.server)["kivi:num_preemptions_total"]
        # Each request alone fits; 6 at a time need more than the pool. The prompts differ from
        # their first token on, so that no request shares another's pages.
        tokens = 32 * pages // 8
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: self.complete(f"{i}. " + TEXT * 2, tokens), range(8)))
        for status, body in answers:
            self.assertEqual(status, 200, body)
            self.assertEqual(body["usage"]["completion_tokens"], tokens)
        health = self.wait_until_idle(30)
        self.assertEqual(health["cache_pages_used"], 0)
        self.assertGreater(metrics(self.server)["kivi:num_preemptions_total"], before)
        # The high-water mark stays after the pages are back, and never passes the pool (its exact
        # value is the block pool test's: here preemption's timing decides it).
        self.assertGreater(health["cache_pages_peak"], 0)
        self.assertLessEqual(health["cache_pages_peak"], pages)


if __name__ == "__main__":
    run_tests(__import__(__name__))
