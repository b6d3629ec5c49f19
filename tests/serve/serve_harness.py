"""Starts `kivi-host serve` on a free loopback port for a test and stops it afterwards.

Also runs `kivi-host generate` for reference results. Used by the serve tests (run by CTest
with the project's venv python; see CMakeLists.txt)."""
import argparse
import json
import os
import re
import subprocess
import tempfile
import sys
import threading
import time
import unittest
import urllib.request

SKIP = 77  # CTest's SKIP_RETURN_CODE for these tests


class Server:
    """kivi-host serve with `serve` keys added to [serve] and `extra` TOML (cache, attention)."""

    def __init__(self, kivi_host, model, serve="", extra="", start_timeout=120):
        self.dir = tempfile.mkdtemp(prefix="kivi-serve-test-")
        self.config = os.path.join(self.dir, "serve.toml")
        with open(self.config, "w") as f:
            f.write('mode = "serve"\n' + extra + "\n[serve]\nport = 0\n" + serve + "\n")
            f.write(f'[model]\npath = "{model}"\ndevice = "cpu"\n')
        self.proc = subprocess.Popen([kivi_host, "--config", self.config], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.output = []
        deadline = time.time() + start_timeout
        self.port = None
        while time.time() < deadline and self.port is None:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            self.proc.kill()
            raise RuntimeError("kivi-host serve did not start:\n" + "".join(self.output))
        self._reader = threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True)
        self._reader.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path, body):
        """(status, parsed JSON) for a POST with a raw body (bytes or str)."""
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_until_idle(self, seconds):
        """Waits until no request runs or waits for a row; returns the last /health. A request
        the server has answered "200 OK" to may still be queued (it is admitted at the next step),
        so 'active' alone can read 0 just before it becomes 1."""
        deadline = time.time() + seconds
        health = self.get("/health")
        while (health["active"] or health["queued"]) and time.time() < deadline:
            time.sleep(0.05)
            health = self.get("/health")
        return health

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        return self.proc.returncode


def generate_reference(kivi_host, model, prompts, max_new_tokens, extra=""):
    """`kivi-host generate` (greedy) on text prompts: the new token ids of each prompt."""
    d = tempfile.mkdtemp(prefix="kivi-serve-ref-")
    config = os.path.join(d, "generate.toml")
    with open(config, "w") as f:
        f.write('mode = "generate"\n' + extra + "\n[generate]\n")
        f.write("prompts = [" + ", ".join(json.dumps(p) for p in prompts) + "]\n")
        f.write(f"max_new_tokens = {max_new_tokens}\n")
        f.write(f'[model]\npath = "{model}"\ndevice = "cpu"\n')
    out = subprocess.run([kivi_host, "--config", config], capture_output=True, text=True, check=True).stdout
    results = []
    for i in range(len(prompts)):
        ids = re.search(rf"^prompt {i} \(\d+ tokens\) -> \d+ new tokens \[[^\]]+\]:([ \d]*)$", out, re.M)
        assert ids, out
        results.append([int(t) for t in ids.group(1).split()])
    return results


def run_tests(module):
    """Sets module.ARGS from --kivi-host and --source, then runs the module's unittest cases."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--kivi-host", required=True)
    parser.add_argument("--source", required=True, help="the repository root")
    module.ARGS, rest = parser.parse_known_args()
    unittest.main(module=module, argv=[sys.argv[0]] + rest, verbosity=2)
