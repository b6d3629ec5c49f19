"""kivi-host serve through the real (pinned) openai client on loopback: completions, chat,
streaming, logprobs and echo, greedy results equal to `kivi-host generate`, concurrent requests
equal to their sequential results, n and seed, and bad input that must get a JSON error while
the server keeps serving (malformed JSON, wrong types, unknown model, prompts over the context,
negative max_tokens, a client that disconnects mid-stream, a full queue).

    python serve_openai_test.py --kivi-host build/bin/kivi-host --source .
"""
import concurrent.futures
import json
import os
import select
import socket
import struct
import sys
import tempfile
import threading
import time
import unittest

from serve_harness import SKIP, Server, run_tests, generate_reference

try:
    import openai
    from tokenizers import Tokenizer
except ImportError as e:  # the GPU machine's python has neither
    print(f"skipped: {e}")
    sys.exit(SKIP)

ARGS = None
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. However little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
        "surrounding families, that he is considered the rightful property of some one or other of "
        "their daughters.")


def model_dir():
    return os.path.abspath(os.path.join(ARGS.source, "models", "kivi-llama-tiny"))


class ServeTest(unittest.TestCase):
    """One server: the bundled tiny Llama, the default KIVI-2 cache, 4 rows, a chat template."""

    @classmethod
    def setUpClass(cls):
        template = os.path.abspath(os.path.join(ARGS.source, "tests", "serve", "chat_template.jinja"))
        cls.server = Server(ARGS.kivi_host, model_dir(),
                            serve=f'max_batch = 4\nmax_queue = 32\nchat_template = "{template}"')
        cls.client = openai.OpenAI(base_url=cls.server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        cls.name = "kivi-llama-tiny"
        cls.tok = Tokenizer.from_file(os.path.join(model_dir(), "tokenizer.json"))

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        assert rc == 0, "".join(cls.server.output)

    def wait_until_idle(self, seconds):
        health = self.server.wait_until_idle(seconds)
        self.assertEqual((health["active"], health["queued"]), (0, 0))

    def complete(self, prompt, **kw):
        return self.client.completions.create(model=self.name, prompt=prompt, **kw)

    def test_models_and_health(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], [self.name])
        health = self.server.get("/health")
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["max_batch"], 4)

    def test_greedy_completion_equals_generate(self):
        prompts = [TEXT[:45], "Anne Elliot"]
        reference = generate_reference(ARGS.kivi_host, model_dir(), prompts, 24)
        for prompt, ids in zip(prompts, reference):
            r = self.complete(prompt, max_tokens=24, temperature=0, logprobs=0)
            choice = r.choices[0]
            self.assertEqual(choice.text, self.tok.decode(ids, skip_special_tokens=True))
            self.assertEqual(choice.logprobs.tokens, [self.tok.decode([i], skip_special_tokens=False) for i in ids])
            self.assertEqual(r.usage.completion_tokens, len(ids))
            self.assertEqual(choice.finish_reason, "length" if len(ids) == 24 else "stop")

    def test_streaming_equals_non_streaming(self):
        full = self.complete("Anne", max_tokens=20, temperature=0)
        chunks = list(self.complete("Anne", max_tokens=20, temperature=0, stream=True,
                                    stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, full.choices[0].text)
        self.assertEqual([c.choices[0].finish_reason for c in chunks if c.choices][-1], full.choices[0].finish_reason)
        self.assertEqual(chunks[-1].usage.completion_tokens, full.usage.completion_tokens)
        self.assertGreater(len(chunks), 3)  # really streamed, token by token
        # logprobs while streaming: one token per chunk, at the offsets of the whole answer's
        full = self.complete("Anne", max_tokens=12, temperature=0, logprobs=1)
        streamed = [c.choices[0].logprobs for c in self.complete("Anne", max_tokens=12, temperature=0, logprobs=1,
                                                                 stream=True) if c.choices[0].logprobs]
        self.assertEqual([o for lp in streamed for o in lp.text_offset], full.choices[0].logprobs.text_offset)
        self.assertEqual([t for lp in streamed for t in lp.tokens], full.choices[0].logprobs.tokens)

    def test_stop_strings(self):
        full = self.complete(TEXT[:60], max_tokens=30, temperature=0).choices[0].text
        stop = full[5:8]
        cut = self.complete(TEXT[:60], max_tokens=30, temperature=0, stop=[stop])
        self.assertEqual(cut.choices[0].text, full[:full.index(stop)])
        self.assertEqual(cut.choices[0].finish_reason, "stop")

    def test_chat(self):
        messages = [{"role": "system", "content": "You are Anne."}, {"role": "user", "content": "Who is Wentworth?"}]
        r = self.client.chat.completions.create(model=self.name, messages=messages, max_tokens=12, temperature=0)
        rendered = "<|bos|>" + "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages) + "<|assistant|>\n"
        self.assertEqual(r.usage.prompt_tokens, len(self.tok.encode(rendered, add_special_tokens=False).ids))
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertIn(r.choices[0].finish_reason, ("stop", "length"))
        streamed = self.client.chat.completions.create(model=self.name, messages=messages, max_tokens=12,
                                                       temperature=0, stream=True)
        self.assertEqual("".join(c.choices[0].delta.content or "" for c in streamed if c.choices),
                         r.choices[0].message.content)
        with_lp = self.client.chat.completions.create(model=self.name, messages=messages, max_tokens=12,
                                                      temperature=0, logprobs=True, top_logprobs=2)
        content = with_lp.choices[0].logprobs.content
        self.assertEqual(len(content), with_lp.usage.completion_tokens)
        for entry in content:
            self.assertEqual(len(entry.top_logprobs), 2)
            self.assertAlmostEqual(entry.logprob, entry.top_logprobs[0].logprob, places=5)  # greedy

    def test_logprobs_and_echo_score_the_prompt(self):
        r = self.complete(TEXT[:80], max_tokens=6, temperature=0, logprobs=3)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 6)
        for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            self.assertLessEqual(value, 0.0)
            self.assertLessEqual(len(top), 4)
            self.assertAlmostEqual(value, max(top.values()), places=5)  # greedy picks the top token
        # Echo the prompt plus what was generated: the last six prompt positions score the same
        # tokens from the same context, so they carry the same log-probabilities.
        prompt_ids = self.tok.encode(TEXT[:80]).ids
        gen_ids = [self.tok.token_to_id(t) for t in lp.tokens]
        if None in gen_ids:  # a piece that is not one vocabulary entry: re-encode the text
            gen_ids = self.tok.encode(r.choices[0].text, add_special_tokens=False).ids
        echo = self.complete(prompt_ids + gen_ids, max_tokens=0, echo=True, logprobs=1, temperature=0)
        e = echo.choices[0].logprobs
        self.assertIsNone(e.token_logprobs[0])
        self.assertEqual(len(e.token_logprobs), len(prompt_ids) + len(gen_ids))
        for a, b in zip(e.token_logprobs[-len(gen_ids):], lp.token_logprobs):
            self.assertAlmostEqual(a, b, delta=2e-3)
        self.assertEqual(echo.choices[0].text, self.tok.decode(prompt_ids + gen_ids, skip_special_tokens=True))

    def test_n_and_seed(self):
        a = self.complete("Anne", max_tokens=8, temperature=1.0, n=3, seed=7)
        b = self.complete("Anne", max_tokens=8, temperature=1.0, n=3, seed=7)
        self.assertEqual(sorted(c.index for c in a.choices), [0, 1, 2])
        self.assertEqual([c.text for c in a.choices], [c.text for c in b.choices])
        self.assertGreater(len({c.text for c in a.choices}), 1)  # seed + i per sample
        top = self.complete("Anne", max_tokens=8, temperature=0.7, top_p=0.5, seed=3)
        self.assertEqual(top.usage.completion_tokens, 8 if top.choices[0].finish_reason == "length" else
                         top.usage.completion_tokens)

    def test_concurrent_requests_match_sequential(self):
        words = TEXT.split()
        jobs = [(" ".join(words[:4 + 5 * i]), 8 + 2 * i) for i in range(8)]  # different lengths
        sequential = [self.complete(p, max_tokens=m, temperature=0).choices[0].text for p, m in jobs]
        start = time.time()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # 8 requests on 4 rows: 4 queue
            futures = [pool.submit(self.complete, p, max_tokens=m, temperature=0) for p, m in jobs]
            concurrent_texts = [f.result(timeout=120).choices[0].text for f in futures]
        self.assertLess(time.time() - start, 120)
        self.assertEqual(concurrent_texts, sequential)
        # No polling: the server frees a row and updates /health before it sends the row's last
        # event, so once every response is in, nothing is active or queued.
        health = self.server.get("/health")
        self.assertEqual((health["active"], health["queued"], health["cache_tokens"]), (0, 0, 0))

    def test_bad_inputs_get_json_errors(self):
        post = self.server.post
        cases = [
            ("/v1/completions", "{not json", 400, "not valid JSON"),
            ("/v1/completions", "[1, 2]", 400, "JSON object"),
            ("/v1/completions", json.dumps({"prompt": "a", "max_tokens": "5"}), 400, "max_tokens"),
            ("/v1/completions", json.dumps({"prompt": "a", "temperature": "hot"}), 400, "temperature"),
            ("/v1/completions", json.dumps({"prompt": "a", "model": "gpt-4"}), 404, "does not exist"),
            ("/v1/completions", json.dumps({"prompt": "a", "max_tokens": -1}), 400, "max_tokens"),
            ("/v1/completions", json.dumps({"prompt": [0] * 5000}), 400, "context"),
            ("/v1/completions", json.dumps({"prompt": [0, 99999]}), 400, "vocabulary"),
            ("/v1/completions", json.dumps({"prompt": []}), 400, "empty"),
            ("/v1/completions", json.dumps({"prompt": "a", "n": 0}), 400, "n = 0"),
            ("/v1/completions", json.dumps({"prompt": "a", "stop": 3}), 400, "stop"),
            ("/v1/completions", json.dumps({"max_tokens": 3}), 400, "prompt"),
            ("/v1/chat/completions", json.dumps({"messages": "hi"}), 400, "messages"),
            ("/v1/chat/completions", json.dumps({"messages": [{"role": "robot", "content": "x"}]}), 400, "role"),
            ("/v1/nothing", "{}", 404, "no endpoint"),
        ]
        for path, body, status, words in cases:
            with self.subTest(body=body):
                code, reply = post(path, body)
                self.assertEqual(code, status)
                self.assertIn(words, reply["error"]["message"])
        with self.assertRaises(openai.BadRequestError):
            self.complete("a", max_tokens=-5)
        with self.assertRaises(openai.NotFoundError):
            self.client.completions.create(model="nope", prompt="a")
        self.assertEqual(self.complete("Anne", max_tokens=3, temperature=0).usage.completion_tokens, 3)

    def raw(self, data, read=True, half_close=True):
        """Sends raw bytes on a new connection, then shuts down its sending side (half_close), so
        that the server, which keeps connections alive, closes it after its answers; returns the
        whole reply (up to close)."""
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=60) as s:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            reply = b""
            while read:
                part = s.recv(65536)
                if not part:
                    break
                reply += part
            return reply

    def test_http_level_errors(self):
        def status(reply):
            return int(reply.split(b" ", 2)[1])
        self.assertEqual(status(self.raw(b"NONSENSE\r\n\r\n")), 400)
        self.assertEqual(status(self.raw(b"GET /health HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")), 431)
        self.assertEqual(status(self.raw(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n")), 413)
        self.assertEqual(status(self.raw(b"GET /v1/completions HTTP/1.1\r\n\r\n")), 405)
        body = json.dumps({"prompt": "Anne", "max_tokens": 2, "temperature": 0}).encode()
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=30) as c:  # curl's way
            c.sendall(b"POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: " +
                      str(len(body)).encode() + b"\r\n\r\n")
            self.assertEqual(c.recv(100), b"HTTP/1.1 100 Continue\r\n\r\n")
            c.sendall(body)
            c.shutdown(socket.SHUT_WR)
            reply = b"".join(iter(lambda: c.recv(65536), b""))
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 OK"), reply[:100])
        self.assertIn(b'"completion_tokens":2', reply)
        # A chunked request body (what a client streaming its upload sends), in two chunks.
        half = len(body) // 2
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]))
        reply = self.raw(b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
                         chunked + b"0\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 OK"), reply[:100])
        self.assertIn(b'"completion_tokens":2', reply)
        # Two requests on one kept-alive connection, the second sent before the first is answered.
        reply = self.raw(b"GET /health HTTP/1.1\r\n\r\nGET /v1/models HTTP/1.1\r\n\r\n")
        self.assertEqual(reply.count(b"HTTP/1.1 200 OK"), 2)
        self.assertLess(reply.index(b'"status":"ok"'), reply.index(b'"object":"list"'))
        code, reply = self.server.post("/v1/completions", json.dumps({"prompt": ["a"] * 9, "n": 8}))
        self.assertEqual(code, 400)
        self.assertIn("72 sequences", reply["error"]["message"])
        self.assertEqual(self.server.get("/health")["status"], "ok")

    def test_client_disconnect_mid_stream_frees_its_row(self):
        body = json.dumps({"prompt": "Anne", "max_tokens": 3000, "stream": True, "ignore_eos": True,
                           "temperature": 0})
        s = socket.create_connection(("127.0.0.1", self.server.port))
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
        self.assertIn(b"200 OK", s.recv(4096))
        s.close()
        self.wait_until_idle(20)
        self.assertEqual(self.complete("Anne", max_tokens=2, temperature=0).usage.completion_tokens, 2)

    def test_client_reset_while_waiting_for_a_whole_answer_frees_its_row(self):
        # Not streamed: nothing is written until the end, and tokens keep coming; the client is
        # still looked at every 100 ms (the soak test found a row held for the whole 1500 tokens).
        body = json.dumps({"prompt": "Anne", "max_tokens": 1500, "ignore_eos": True, "temperature": 0})
        s = socket.create_connection(("127.0.0.1", self.server.port))
        s.sendall(f"POST /v1/completions HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        time.sleep(0.5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
        s.close()
        self.wait_until_idle(5)  # generating all 1500 tokens takes far longer on the CPU

    def test_a_number_no_double_holds_is_a_400(self):
        for field in ("max_tokens", "temperature", "seed"):
            code, reply = self.server.post("/v1/completions", '{"prompt": "a", "%s": 1e400}' % field)
            self.assertEqual(code, 400, reply)
            self.assertIn("not valid JSON", reply["error"]["message"])
        self.assertEqual(self.server.get("/health")["status"], "ok")

    def test_half_closed_client_gets_its_answer(self):
        # A client may shut down its sending side once its request is out (HTTP allows it; some
        # clients and proxies do): that is not a disconnect, and the answer still comes.
        body = json.dumps({"prompt": "Anne", "max_tokens": 4, "temperature": 0})
        reply = self.raw(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n{body}".encode(), half_close=True)
        self.assertIn(b"200 OK", reply)
        self.assertIn(b'"completion_tokens":4', reply)


class LimitsTest(unittest.TestCase):
    """A server with one row, a queue of one and a 64-token context."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server(ARGS.kivi_host, model_dir(),
                            serve="max_batch = 1\nmax_queue = 1\ncontext = 64\nread_timeout_ms = 1000",
                            extra='[cache]\nbackend = "fp32"\n[attention]\nbackend = "sdpa"\n')

    @classmethod
    def tearDownClass(cls):
        assert cls.server.stop() == 0, "".join(cls.server.output)

    def test_a_slow_client_is_dropped_when_its_request_is_late_not_per_read(self):
        # One byte every 0.2 s never trips a per-read timeout of 1 s; the whole request must
        # still arrive within it.
        s = socket.create_connection(("127.0.0.1", self.server.port))
        s.settimeout(10)
        start = time.time()
        reply = b""
        try:
            for byte in b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" * 4:
                s.sendall(bytes([byte]))
                readable, _, _ = select.select([s], [], [], 0.2)  # the pause, or the answer
                if readable or time.time() - start > 8:
                    break
        except OSError:
            pass  # the server closed the connection: it answered
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except OSError:
            pass
        s.close()
        self.assertIn(b"408", reply)
        self.assertLess(time.time() - start, 8)
        self.assertEqual(self.server.get("/health")["status"], "ok")

    def test_context_limits(self):
        code, reply = self.server.post("/v1/completions", json.dumps({"prompt": [0] * 65}))
        self.assertEqual(code, 400)
        self.assertIn("context is 64", reply["error"]["message"])
        code, reply = self.server.post("/v1/completions", json.dumps({"prompt": [0] * 60, "max_tokens": 10}))
        self.assertEqual(code, 400)
        code, reply = self.server.post("/v1/completions", json.dumps({"prompt": [0] * 60, "temperature": 0}))
        self.assertEqual(code, 200)  # the default max_tokens shrinks to what fits
        self.assertEqual(reply["usage"]["completion_tokens"], 4)

    def test_full_queue_answers_503_and_the_rest_complete(self):
        body = json.dumps({"prompt": [0, 35], "max_tokens": 60, "ignore_eos": True, "temperature": 0})
        results = []
        lock = threading.Lock()

        def call():
            r = self.server.post("/v1/completions", body)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(timeout=120)
        codes = sorted(code for code, _ in results)
        self.assertIn(503, codes)
        self.assertGreaterEqual(codes.count(200), 2)  # the running one and the queued one
        for code, reply in results:
            if code == 200:
                self.assertEqual(reply["usage"]["completion_tokens"], 60)
            else:
                self.assertEqual(reply["error"]["type"], "server_overloaded")
        self.assertEqual(self.server.post("/v1/completions", body)[0], 200)


class ProfileTest(unittest.TestCase):
    """[serve] profile_steps: the first passes are profiled into the log, with a Chrome trace."""

    def test_first_passes_are_profiled(self):
        trace = os.path.join(tempfile.mkdtemp(prefix="kivi-serve-profile-"), "trace.json")
        server = Server(ARGS.kivi_host, model_dir(), serve=f'profile_steps = 3\nprofile_trace = "{trace}"')
        try:
            code, reply = server.post("/v1/completions", json.dumps({"prompt": "Anne", "max_tokens": 4,
                                                                    "temperature": 0, "ignore_eos": True}))
            self.assertEqual(code, 200)
            deadline = time.time() + 30
            while time.time() < deadline and "trace: " not in "".join(server.output):
                time.sleep(0.1)
            log = "".join(server.output)
            self.assertRegex(log, r"profile \(3 forward passes; top-level CPU operators\): [0-9.]+ us per step")
            self.assertRegex(log, r"\| aten::linear \| [0-9.]+ \| [0-9.]+ \| [0-9.]+% \|")
            with open(trace) as f:
                self.assertIn('"traceEvents"', f.read())
            self.assertEqual(server.post("/v1/completions", json.dumps({"prompt": "Anne", "max_tokens": 2}))[0], 200)
        finally:
            self.assertEqual(server.stop(), 0, "".join(server.output))


if __name__ == "__main__":
    run_tests(sys.modules[__name__])
