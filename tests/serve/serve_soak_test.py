"""A bounded soak of kivi-host serve on loopback (Python standard library only): one server on the
bundled tiny Llama (default KIVI cache, 4 rows, read_timeout_ms 1000), several client threads
running for a fixed time a seeded random mix of

  good         greedy /v1/completions and /v1/chat/completions, streamed or not, that must equal
               the reference answer of the same request obtained sequentially before the load
               (text, completion_tokens, finish_reason);
  malformed    bad JSON, wrong field types and values, an unknown model or path, the wrong
               method, garbage bytes as the request line, headers over 16 KiB, bodies over
               max_body_bytes: each its status and an OpenAI-shaped JSON error;
  disconnect   streamed requests with many tokens whose client reads a few events and hangs up;
  slow         clients trickling a byte every 0.2 s: 408 (or a close) at the whole-request
               deadline, while the others are served;
  half_closed  a whole request, then shutdown(SHUT_WR): the answer still comes, correct;
  keep_alive   2-4 requests on one connection, in turn or pipelined, ending with
               `Connection: close` or a half-close;

then checks that every answer was right, that /health goes back to idle (active 0, queued 0,
cache_tokens at its baseline), that the server's threads, descriptors and RSS (bounded growth
over the RSS after a warm-up) come back, that it still answers, and that it exits 0.

    python serve_soak_test.py --kivi-host build/bin/kivi-host --source .
    KIVI_SOAK_SECONDS=600 KIVI_SOAK_JSON=soak.json python serve_soak_test.py ...   # longer

Env: KIVI_SOAK_SECONDS (load, default 45), KIVI_SOAK_THREADS (default 8), KIVI_SOAK_SEED,
KIVI_SOAK_JSON (a file for the summary as JSON).
"""
import argparse
import collections
import json
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import unittest

from serve_harness import SKIP, Server, run_tests

ARGS = None
LOAD_SECONDS = float(os.environ.get("KIVI_SOAK_SECONDS", "45"))
WARMUP_SECONDS = 6.0
THREADS = int(os.environ.get("KIVI_SOAK_THREADS", "8"))
SEED = int(os.environ.get("KIVI_SOAK_SEED", "20261202"))
READ_TIMEOUT_MS = 1000
MAX_BODY_BYTES = 64 * 1024
SOCKET_TIMEOUT = 60.0  # per socket operation: generous, a busy 2-core machine is slow, not hung
SETTLE_SECONDS = 10.0  # for /health, threads and descriptors to come back after the load
# RSS bound over the RSS measured after the warm-up (which already ran every kind of client, so
# the cache rows, libtorch's allocations, glibc's per-thread arenas and cached thread stacks are
# at their working size). Measured on the 2-core machine, RSS ~395 MiB after the warm-up: +1.9 to
# +4.2 MiB after 45 s (3000-3900 requests, 8 clients), +5.6 MiB after 180 s (12900 requests):
# allocator fragmentation that levels off, not a per-request leak. 64 MiB is ten times that,
# and still well below what a real leak adds: one leaked connection thread (its 8 MiB stack) every
# few hundred connections, or a few KiB per request (a response, a sequence's tokens) x thousands.
RSS_GROWTH_LIMIT_KIB = 64 * 1024

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. However little known the feelings or views of such a man may be "
        "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
        "surrounding families, that he is considered the rightful property of some one or other of "
        "their daughters.")
# Short prompts (well under the KIVI cache's 128-token full-precision residual window): there,
# greedy answers do not depend on what else is batched (docs/server.md).
PROMPTS = ["Anne", "Anne Elliot", "Captain Wentworth", "Sir Walter Elliot of Kellynch Hall", TEXT[:45],
           TEXT[:80], TEXT[:130], TEXT[150:260], [0, 35, 100, 200, 7]]
CHATS = [[{"role": "user", "content": "Who is Wentworth?"}],
         [{"role": "system", "content": "You are Anne."}, {"role": "user", "content": "Where is Bath?"}],
         [{"role": "user", "content": TEXT[:90]}]]


def model_dir():
    return os.path.abspath(os.path.join(ARGS.source, "models", "kivi-llama-tiny"))


def missing_prerequisite(argv):
    """Why this test cannot run here (then it is skipped), or None."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--source", default=".")
    args, _ = parser.parse_known_args(argv)
    weights = os.path.join(args.source, "models", "kivi-llama-tiny", "model.safetensors")
    if not os.path.isfile(weights) or os.path.getsize(weights) < 4096:  # absent, or a Git LFS pointer
        return f"no bundled model weights at {weights}"
    if not os.path.isfile("/proc/self/status"):
        return "no /proc (the RSS, thread and descriptor checks read /proc/<pid>)"
    return None


class Failure(Exception):
    """A wrong answer (as opposed to a socket error or a timeout)."""


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


class Http:
    """One client connection: raw bytes out, HTTP/1.1 responses in (Content-Length, chunked)."""

    def __init__(self, port, big_send_buffer=False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(SOCKET_TIMEOUT)
        if big_send_buffer:  # a large request leaves at once, whatever the server reads of it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        try:
            self.sock.connect(("127.0.0.1", port))
        except OSError:
            self.sock.close()
            raise
        self.buf = bytearray()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self, reset=False):
        if reset:  # an abortive close: RST instead of FIN
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data, half_close=False):
        self.sock.sendall(data)
        if half_close:
            self.sock.shutdown(socket.SHUT_WR)

    @classmethod
    def parse(cls, data):
        """The response at the start of `data` (bytes already read whole)."""
        reader = cls.__new__(cls)
        reader.sock, reader.buf = None, bytearray(data)
        return reader.response()

    def _more(self):
        if self.sock is None:
            raise Failure("a truncated response")
        data = self.sock.recv(65536)
        if not data:
            raise Failure("the server closed the connection before a whole response")
        self.buf += data

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > 1 << 20:
                raise Failure("no line end in 1 MiB")
            self._more()

    def _exact(self, n):
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def response(self, events=None):
        """The next response; with `events`, stops (returns what came) once that many SSE events
        arrived."""
        line = self._line()
        parts = line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise Failure(f"not an HTTP status line: {line[:100]!r}")
        status = int(parts[1])
        headers = {}
        while True:
            field = self._line()
            if not field:
                break
            name, _, value = field.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                body += self._exact(size)
                if self._line():
                    raise Failure("a chunk not followed by CRLF")
                if events and body.count(b"\n\n") >= events:
                    break
            return Response(status, headers, bytes(body))
        if "content-length" in headers:
            return Response(status, headers, self._exact(int(headers["content-length"])))
        raise Failure(f"a response with neither Content-Length nor chunks: {headers}")

    def closed_by_server(self):
        """True once the server has closed the connection (EOF or reset), nothing else sent."""
        if self.buf:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def request(method, path, body=None, close=False, version="1.1"):
    head = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1", "User-Agent: kivi-soak"]
    if body is not None:
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


class Good:
    """A greedy request; `answer` parses its response into (text, completion_tokens, finish)."""

    def __init__(self, chat, payload):
        self.chat, self.payload = chat, payload
        self.path = "/v1/chat/completions" if chat else "/v1/completions"

    def body(self, stream):
        body = dict(self.payload, temperature=0)
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    def bytes(self, stream, close=False):
        return request("POST", self.path, self.body(stream), close=close)

    def answer(self, r, stream):
        if r.status != 200:
            raise Failure(f"status {r.status}: {r.body[:300]!r}")
        if not stream:
            reply = json.loads(r.body)
            choice = reply["choices"][0]
            text = choice["message"]["content"] if self.chat else choice["text"]
            return text, reply["usage"]["completion_tokens"], choice["finish_reason"]
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            raise Failure(f"a stream of type {r.headers.get('content-type')}")
        text, tokens, finish, done = [], None, None, False
        for event in r.body.decode().split("\n\n"):
            if not event:
                continue
            if done or not event.startswith("data: "):
                raise Failure(f"unexpected event {event[:200]!r}")
            if event == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(event[6:])
            if "error" in chunk:
                raise Failure(f"error event {event[:300]!r}")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                text.append((choice["delta"].get("content") or "") if self.chat else choice["text"])
                finish = choice["finish_reason"] or finish
        if not done:
            raise Failure("a stream without [DONE]")
        return "".join(text), tokens, finish

    def __repr__(self):
        return f"{self.path} {json.dumps(self.payload)[:80]}"


def good_requests():
    rng = random.Random(SEED)
    goods = [Good(False, {"prompt": p, "max_tokens": rng.randint(4, 12)}) for p in PROMPTS]
    goods += [Good(True, {"messages": m, "max_tokens": rng.randint(4, 12)}) for m in CHATS]
    goods.append(Good(False, {"prompt": TEXT[:60], "max_tokens": 12, "stop": ["e"]}))  # a stop string
    return goods


def check_error(r, status, close_expected):
    """An OpenAI-shaped JSON error with `status`."""
    if r.status != status:
        raise Failure(f"status {r.status}, expected {status}: {r.body[:300]!r}")
    if not r.headers.get("content-type", "").startswith("application/json"):
        raise Failure(f"an error of type {r.headers.get('content-type')}")
    error = json.loads(r.body)["error"]
    if not (isinstance(error.get("message"), str) and error["message"] and isinstance(error.get("type"), str)
            and "param" in error and error.get("code") == status):
        raise Failure(f"not an OpenAI error body: {r.body[:300]!r}")
    if close_expected and r.headers.get("connection", "").lower() != "close":
        raise Failure(f"a {status} without Connection: close")


def random_garbage(rng):
    first = bytes([rng.randrange(0x80, 0x100)])  # never a token character: a bad method
    rest = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    return first + rest.replace(b"\r", b"").replace(b"\n", b"") + b"\r\n\r\n"


def chunked_body(size):
    piece = b"x" * 8192
    chunks = [piece] * (size // len(piece)) + [b"x" * (size % len(piece))]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"


# (name, bytes of the request from an rng, status, whether the server answers at the HTTP level
# (then closes the connection) rather than with an API error on a connection it keeps).
MALFORMED = [
    ("bad_json", lambda r: request("POST", "/v1/completions", b'{"prompt": "a", '), 400, False),
    ("json_array", lambda r: request("POST", "/v1/completions", b"[1, 2]"), 400, False),
    ("max_tokens_-1", lambda r: request("POST", "/v1/completions", {"prompt": "a", "max_tokens": -1}), 400, False),
    ("max_tokens_str", lambda r: request("POST", "/v1/completions", {"prompt": "a", "max_tokens": "5"}), 400, False),
    ("temperature_5", lambda r: request("POST", "/v1/completions", {"prompt": "a", "temperature": 5}), 400, False),
    ("temperature_str", lambda r: request("POST", "/v1/chat/completions",
                                          {"messages": CHATS[0], "temperature": "hot"}), 400, False),
    ("n_0", lambda r: request("POST", "/v1/completions", {"prompt": "a", "n": 0}), 400, False),
    ("no_prompt", lambda r: request("POST", "/v1/completions", {"max_tokens": 3}), 400, False),
    ("token_id_over_vocab", lambda r: request("POST", "/v1/completions", {"prompt": [0, 99999]}), 400, False),
    ("prompt_over_context", lambda r: request("POST", "/v1/completions", {"prompt": [5] * 5000}), 400, False),
    ("max_tokens_over_context", lambda r: request("POST", "/v1/completions",
                                                  {"prompt": "a", "max_tokens": 5000}), 400, False),
    ("bad_role", lambda r: request("POST", "/v1/chat/completions",
                                   {"messages": [{"role": "robot", "content": "x"}]}), 400, False),
    ("messages_str", lambda r: request("POST", "/v1/chat/completions", {"messages": "hi"}), 400, False),
    ("unknown_model", lambda r: request("POST", "/v1/completions", {"prompt": "a", "model": "gpt-4"}), 404, False),
    ("unknown_path", lambda r: request("POST", r.choice(["/v1/nothing", "/v2/completions", "/"]), {}), 404, False),
    ("get_unknown_path", lambda r: request("GET", "/v1/engines"), 404, False),
    ("wrong_method_get", lambda r: request("GET", r.choice(["/v1/completions", "/v1/chat/completions"])),
     405, False),
    ("wrong_method_post", lambda r: request("POST", r.choice(["/health", "/v1/models"]), {}), 405, False),
    ("wrong_method_delete", lambda r: request("DELETE", "/v1/completions"), 405, False),
    ("garbage_request_line", random_garbage, 400, True),
    ("bad_version", lambda r: b"GET /health HTTP/7.3\r\n\r\n", 400, True),
    ("bad_target", lambda r: b"GET health HTTP/1.1\r\nHost: x\r\n\r\n", 400, True),
    ("header_over_16k", lambda r: b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * r.randint(17000, 40000)
     + b"\r\n\r\n", 431, True),
    ("many_headers", lambda r: b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: yy\r\n" % i for i in range(2000))
     + b"\r\n", 431, True),
    ("body_over_limit", lambda r: request("POST", "/v1/completions",
                                          b"x" * r.randint(MAX_BODY_BYTES + 1, MAX_BODY_BYTES + 40000)), 413, True),
    ("body_declared_over_limit", lambda r: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
     b"Content-Length: 99999999999\r\n\r\n", 413, True),
    ("chunked_body_over_limit", lambda r: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + chunked_body(r.randint(MAX_BODY_BYTES + 1, MAX_BODY_BYTES + 40000)),
     413, True),
]


def proc_status(pid):
    """VmRSS and VmHWM (KiB), Threads, and open descriptors of a process."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                fields[key] = int(value.split()[0])
    fields["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return fields


class Stats:
    """Per kind: runs, requests, ok and failed requests, timeouts, notes; the failures' details."""

    def __init__(self):
        self.lock = threading.Lock()
        self.kinds = collections.OrderedDict(
            (k, collections.Counter()) for k in ("good", "malformed", "disconnect", "slow", "half_closed",
                                                 "keep_alive"))
        self.notes = collections.defaultdict(collections.Counter)
        self.failures = []
        self.slow_seconds = []

    def add(self, kind, **counts):
        with self.lock:
            self.kinds[kind].update(counts)

    def note(self, kind, what):
        with self.lock:
            self.notes[kind][what] += 1

    def fail(self, kind, detail, timeout=False):
        with self.lock:
            self.kinds[kind]["timeouts" if timeout else "failed"] += 1
            self.failures.append(f"{kind}: {detail}")

    def table(self):
        lines = [f"{'kind':<12} {'runs':>6} {'requests':>8} {'ok':>6} {'failed':>6} {'timeouts':>8}  notes"]
        for kind, c in self.kinds.items():
            notes = ", ".join(f"{k} {v}" for k, v in sorted(self.notes[kind].items()))
            lines.append(f"{kind:<12} {c['runs']:>6} {c['requests']:>8} {c['ok']:>6} {c['failed']:>6} "
                         f"{c['timeouts']:>8}  {notes}")
        return "\n".join(lines)

    def as_json(self):
        return {"kinds": {k: dict(c) for k, c in self.kinds.items()},
                "notes": {k: dict(c) for k, c in self.notes.items()},
                "failures": self.failures[:100],
                "slow_seconds_max": max(self.slow_seconds, default=None)}


class Clients:
    """The client kinds against one server, checking answers against `reference`."""

    WEIGHTS = {"good": 34, "malformed": 22, "disconnect": 10, "slow": 8, "half_closed": 10, "keep_alive": 16}

    def __init__(self, port, goods, reference):
        self.port, self.goods, self.reference = port, goods, reference

    def check_good(self, good, stream, r):
        got = good.answer(r, stream)
        want = self.reference[(id(good), stream)]
        if got != want:
            raise Failure(f"{good!r} stream={stream}: got {got!r}, expected {want!r}")

    def good(self, rng, stats):
        good, stream = rng.choice(self.goods), rng.random() < 0.5
        stats.add("good", requests=1)
        stats.note("good", "streamed" if stream else "whole")
        with Http(self.port) as h:
            h.send(good.bytes(stream))
            self.check_good(good, stream, h.response())
        stats.add("good", ok=1)

    def malformed(self, rng, stats):
        name, make, status, http_level = rng.choice(MALFORMED)
        half_close = rng.random() < 0.5
        stats.add("malformed", requests=1)
        stats.note("malformed", str(status))
        data = make(rng)
        with Http(self.port, big_send_buffer=len(data) > 16384) as h:
            try:
                h.send(data, half_close)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before all of it was read: the answer is still there to read
            try:
                r = h.response()
            except Failure as e:
                raise Failure(f"{name} ({data[:60]!r}): {e}")
            try:
                check_error(r, status, http_level)
            except Failure as e:
                raise Failure(f"{name}: {e}")
            if (http_level or half_close) and not h.closed_by_server():
                raise Failure(f"{name}: the connection stayed open after the answer")
        stats.add("malformed", ok=1)

    def disconnect(self, rng, stats):
        chat = rng.random() < 0.3
        body = {"max_tokens": rng.randint(500, 2000), "ignore_eos": True, "stream": True}
        if chat:
            body["messages"] = rng.choice(CHATS)
        else:
            body["prompt"] = rng.choice(PROMPTS)
        body.update({"temperature": 0} if rng.random() < 0.5 else {"temperature": 0.9, "seed": rng.randrange(1000)})
        events = rng.randint(1, 4)
        reset = rng.random() < 0.5
        stats.add("disconnect", requests=1)
        stats.note("disconnect", "reset" if reset else "close")
        h = Http(self.port)
        try:
            h.send(request("POST", "/v1/chat/completions" if chat else "/v1/completions", body))
            r = h.response(events=events)
            if r.status != 200 or r.body.count(b"data: ") < events:
                raise Failure(f"{body}: {r!r}")
        finally:
            h.close(reset=reset)
        stats.add("disconnect", ok=1)

    def slow(self, rng, stats):
        # Headers trickled, or headers at once and the body trickled: either way the whole
        # request is late, so 408 (or a close) at read_timeout_ms after the connection opened.
        body = json.dumps({"prompt": "Anne", "max_tokens": 2, "temperature": 0}).encode()
        head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        trickle_body = rng.random() < 0.5
        stats.add("slow", requests=1)
        start = time.monotonic()
        reply = b""
        with Http(self.port) as h:
            s = h.sock
            try:
                if trickle_body:
                    s.sendall(head)
                for byte in body if trickle_body else head + body:
                    s.sendall(bytes([byte]))
                    readable, _, _ = select.select([s], [], [], 0.2)  # the pause, or the answer
                    if readable or time.monotonic() - start > 10:
                        break
            except OSError:
                pass  # closed by the server
            answered = time.monotonic() - start
            try:
                while True:
                    part = s.recv(65536)
                    if not part:
                        break
                    reply += part
            except OSError:
                pass
        with stats.lock:
            stats.slow_seconds.append(answered)
        if reply:
            try:
                check_error(Http.parse(reply), 408, True)
            except Failure as e:
                raise Failure(f"slow client (trickled {'body' if trickle_body else 'headers'}): {e}")
            stats.note("slow", "408")
        else:
            stats.note("slow", "closed")
        # The whole-request deadline starts when the server takes the connection (after our
        # connect): not before read_timeout_ms, and well before the 10 s we would trickle for.
        if not READ_TIMEOUT_MS / 1000 * 0.8 <= answered <= READ_TIMEOUT_MS / 1000 + 5:
            raise Failure(f"slow client answered after {answered:.2f} s (read_timeout_ms {READ_TIMEOUT_MS})")
        stats.add("slow", ok=1)

    def half_closed(self, rng, stats):
        good, stream = rng.choice(self.goods), rng.random() < 0.5
        stats.add("half_closed", requests=1)
        with Http(self.port) as h:
            h.send(good.bytes(stream), half_close=True)
            self.check_good(good, stream, h.response())
            if not h.closed_by_server():
                raise Failure("the connection stayed open after the answer to a half-closed client")
        stats.add("half_closed", ok=1)

    def keep_alive(self, rng, stats):
        n = rng.randint(2, 4)
        pipelined = rng.random() < 0.5
        half_close = rng.random() < 0.5  # else `Connection: close` on the last request
        stats.note("keep_alive", "pipelined" if pipelined else "in_turn")
        stats.note("keep_alive", "half_close" if half_close else "connection_close")
        items = []
        for i in range(n):
            close = i == n - 1 and not half_close
            x = rng.random()
            if x < 0.7:
                good, stream = rng.choice(self.goods), rng.random() < 0.5
                items.append(("good", good, stream, good.bytes(stream, close)))
            elif x < 0.85:
                items.append(("health", None, None, request("GET", "/health", close=close)))
            else:  # an API error keeps the connection
                items.append(("bad_json", None, None, request("POST", "/v1/completions", b"{nope", close=close)))
        stats.add("keep_alive", requests=n)

        def check(item, r, last):
            kind, good, stream, _ = item
            if kind == "good":
                self.check_good(good, stream, r)
            elif kind == "health":
                if r.status != 200 or json.loads(r.body)["status"] != "ok":
                    raise Failure(f"/health: {r!r}")
            else:
                check_error(r, 400, False)
            if last and not half_close and r.headers.get("connection", "").lower() != "close":
                raise Failure("no Connection: close on the answer to a request that asked for it")
            stats.add("keep_alive", ok=1)

        with Http(self.port) as h:
            if pipelined:
                h.send(b"".join(item[3] for item in items), half_close)
                for i, item in enumerate(items):
                    check(item, h.response(), i == n - 1)
            else:
                for i, item in enumerate(items):
                    h.send(item[3], half_close and i == n - 1)
                    check(item, h.response(), i == n - 1)
            if not h.closed_by_server():
                raise Failure("the connection stayed open after its last request")

    def run(self, seconds, seed, stats):
        """THREADS clients for `seconds`, each with its own seeded rng; returns the ones that hung."""
        end = time.monotonic() + seconds
        kinds, weights = list(self.WEIGHTS), list(self.WEIGHTS.values())

        def client(i):
            rng = random.Random(seed * 1000 + i)
            while time.monotonic() < end:
                kind = rng.choices(kinds, weights)[0]
                stats.add(kind, runs=1)
                try:
                    getattr(self, kind)(rng, stats)
                except socket.timeout as e:
                    stats.fail(kind, f"timed out after {SOCKET_TIMEOUT:.0f} s: {e!r}", timeout=True)
                except Exception as e:  # a wrong answer, or the server closed/reset a connection
                    stats.fail(kind, f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=client, args=(i,), name=f"soak-client-{i}", daemon=True)
                   for i in range(THREADS)]
        for t in threads:
            t.start()
        # Each operation ends within a few socket timeouts, so this wait is bounded too.
        join_by = end + 4 * SOCKET_TIMEOUT
        for t in threads:
            t.join(timeout=max(0.0, join_by - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]


class SoakTest(unittest.TestCase):
    def test_soak(self):
        started = time.monotonic()
        template = os.path.abspath(os.path.join(ARGS.source, "tests", "serve", "chat_template.jinja"))
        server = Server(ARGS.kivi_host, model_dir(),
                        serve=f'max_batch = 4\nmax_queue = 64\nread_timeout_ms = {READ_TIMEOUT_MS}\n'
                              f'max_body_bytes = {MAX_BODY_BYTES}\nchat_template = "{template}"')
        pid = server.proc.pid
        problems = []
        summary = {}
        try:
            self.soak(server, pid, problems, summary)
        finally:
            rc = server.stop()
            summary["exit_code"] = rc
            summary["elapsed_s"] = round(time.monotonic() - started, 1)
            print(f"server exit code {rc}; whole test {summary['elapsed_s']} s", flush=True)
            if rc != 0:
                problems.append(f"the server exited {rc}")
            if os.environ.get("KIVI_SOAK_JSON"):
                with open(os.environ["KIVI_SOAK_JSON"], "w") as f:
                    json.dump(summary, f, indent=2)
        log = "".join(server.output)
        self.assertFalse(problems, "\n".join(problems[:60]) + "\n--- server log (tail) ---\n" + log[-4000:])

    def settle(self, server, pid, cache_tokens, threads=None, fds=None):
        """Waits (at most SETTLE_SECONDS) for an idle server: /health active 0, queued 0,
        cache_tokens back to `cache_tokens`, and (when given) its threads and descriptors back to
        at most `threads` and `fds`. Returns (seconds it took or None, the last /health, the last
        /proc figures); prints what it waited for when that took more than a second."""
        start = time.monotonic()
        trace = []
        while True:
            # /proc is read before /health, 0.2 s after the last request: the thread that served
            # the last /health (a connection's thread ends a moment after its client closes) is
            # gone by then on all but a starved machine, and the next round looks again.
            time.sleep(0.2)
            status = proc_status(pid)
            health = server.get("/health")
            now = time.monotonic() - start
            trace.append(f"{now:.1f}s active {health['active']} queued {health['queued']} cache_tokens "
                         f"{health['cache_tokens']} threads {status['Threads']} fds {status['fds']}")
            idle = (health["active"], health["queued"], health["cache_tokens"]) == (0, 0, cache_tokens)
            if idle and (threads is None or status["Threads"] <= threads) and (fds is None or status["fds"] <= fds):
                break
            if now > SETTLE_SECONDS:
                now = None
                break
        if now is None or now > 1:
            print("waiting for an idle server (expected threads <= %s, fds <= %s):\n  " % (threads, fds)
                  + "\n  ".join(trace[:3] + ["..."] + trace[-3:] if len(trace) > 8 else trace), flush=True)
        return now, health, status

    @staticmethod
    def quiet_figures(pid, samples=5):
        """The server's /proc figures while nobody talks to it: the fewest threads and descriptors
        of a few samples 0.2 s apart (a connection thread may still be ending), the last RSS."""
        figures = []
        for _ in range(samples):
            time.sleep(0.2)
            figures.append(proc_status(pid))
        return dict(figures[-1], Threads=min(f["Threads"] for f in figures), fds=min(f["fds"] for f in figures))

    def soak(self, server, pid, problems, summary):
        summary.update(load_seconds=LOAD_SECONDS, warmup_seconds=WARMUP_SECONDS, threads=THREADS, seed=SEED,
                       read_timeout_ms=READ_TIMEOUT_MS)
        health = server.get("/health")
        base_tokens = health["cache_tokens"]

        # References, one request at a time on the idle server; streamed must equal whole.
        goods = good_requests()
        reference = {}
        for good in goods:
            for stream in (False, True):
                with Http(server.port) as h:
                    h.send(good.bytes(stream))
                    reference[(id(good), stream)] = good.answer(h.response(), stream)
            if reference[(id(good), False)] != reference[(id(good), True)]:
                problems.append(f"{good!r}: streamed {reference[(id(good), True)]!r} != "
                                f"whole {reference[(id(good), False)]!r}")
        clients = Clients(server.port, goods, reference)
        wait, health, _ = self.settle(server, pid, base_tokens)
        if wait is None:
            problems.append(f"not idle after the reference requests: {health}")
        idle = self.quiet_figures(pid)

        # Warm-up: every kind of client for a few seconds, so that what the server keeps (cache
        # rows at their size, allocator arenas, cached thread stacks, lazily started thread pools)
        # is in the figures the load is compared with.
        warm = Stats()
        hung = clients.run(WARMUP_SECONDS, SEED + 1, warm)
        wait, warm_health, _ = self.settle(server, pid, base_tokens)
        if hung or wait is None:
            problems.append(f"after the warm-up: clients {hung} hung, or not idle: {warm_health}")
        problems += ["warm-up " + f for f in warm.failures]
        warmed = self.quiet_figures(pid)
        rss_warm, warm_threads, warm_fds = warmed["VmRSS"], warmed["Threads"], warmed["fds"]

        load = Stats()
        load_start = time.monotonic()
        hung = clients.run(LOAD_SECONDS, SEED, load)
        load_elapsed = time.monotonic() - load_start
        if hung:
            problems.append(f"client threads still running {4 * SOCKET_TIMEOUT:.0f} s after the end: {hung}")
        wait, health, status = self.settle(server, pid, base_tokens, warm_threads, warm_fds)
        if wait is None:
            problems.append(f"not idle {SETTLE_SECONDS:.0f} s after the load: /health {health}, "
                            f"threads {status['Threads']} (after the warm-up {warm_threads}), "
                            f"descriptors {status['fds']} (after the warm-up {warm_fds})")
        rss_after = self.quiet_figures(pid)["VmRSS"]
        problems += load.failures
        for kind, c in load.kinds.items():
            if c["runs"] == 0:
                problems.append(f"no {kind} client ran")
        if rss_after - rss_warm > RSS_GROWTH_LIMIT_KIB:
            problems.append(f"RSS grew from {rss_warm} KiB after the warm-up to {rss_after} KiB after the load "
                            f"(limit +{RSS_GROWTH_LIMIT_KIB} KiB)")

        # Still serving, and right.
        good = goods[0]
        with Http(server.port) as h:
            h.send(good.bytes(False))
            fresh = good.answer(h.response(), False)
        if fresh != reference[(id(good), False)]:
            problems.append(f"after the load {good!r} answered {fresh!r}, expected {reference[(id(good), False)]!r}")

        total = sum(c["requests"] for c in load.kinds.values())
        summary.update(
            requests=total, requests_per_s=round(total / load_elapsed, 1), load_elapsed_s=round(load_elapsed, 1),
            settle_s=None if wait is None else round(wait, 2), load=load.as_json(), warmup=warm.as_json(),
            rss_kib={"after_warmup": rss_warm, "after_load": rss_after, "peak": status["VmHWM"]},
            cache_tokens={"before": base_tokens, "after_warmup": warm_health["cache_tokens"],
                          "after_load": health["cache_tokens"]},
            cache_bytes_after_load=health["cache_bytes"], completed=health["completed"], steps=health["steps"],
            threads={"idle": idle["Threads"], "after_warmup": warm_threads, "after_load": status["Threads"]},
            fds={"idle": idle["fds"], "after_warmup": warm_fds, "after_load": status["fds"]})
        print(f"\nsoak: {THREADS} clients, {load_elapsed:.1f} s of load (+{WARMUP_SECONDS:.0f} s warm-up), "
              f"seed {SEED}\n{load.table()}\n"
              f"total {total} requests ({total / load_elapsed:.1f}/s), "
              f"{sum(c['failed'] for c in load.kinds.values())} failed, "
              f"{sum(c['timeouts'] for c in load.kinds.values())} timed out; "
              f"slow clients answered in {min(load.slow_seconds, default=0):.2f}.."
              f"{max(load.slow_seconds, default=0):.2f} s\n"
              f"warm-up: {sum(c['requests'] for c in warm.kinds.values())} requests, "
              f"{len(warm.failures)} failures\n"
              f"RSS: {rss_warm / 1024:.1f} MiB after the warm-up, {rss_after / 1024:.1f} MiB after the load "
              f"({(rss_after - rss_warm) / 1024:+.1f} MiB; limit +{RSS_GROWTH_LIMIT_KIB / 1024:.0f}), "
              f"peak {status['VmHWM'] / 1024:.1f} MiB\n"
              f"cache_tokens: {base_tokens} before, {health['cache_tokens']} after "
              f"(cache_bytes {health['cache_bytes']}); /health idle "
              f"{'after %.2f s' % wait if wait is not None else 'NOT reached'}; "
              f"server completed {health['completed']} sequences in {health['steps']} steps\n"
              f"server threads {idle['Threads']} idle, {warm_threads} after the warm-up, {status['Threads']} after "
              f"the load; descriptors {idle['fds']}, {warm_fds}, {status['fds']}", flush=True)
        for failure in load.failures[:20]:
            print("  " + failure, flush=True)


if __name__ == "__main__":
    why = missing_prerequisite(sys.argv[1:])
    if why:
        print(f"skipped: {why}")
        sys.exit(SKIP)
    run_tests(sys.modules[__name__])
