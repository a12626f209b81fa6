"""A judge behind an OpenAI-compatible server: `posttrain serve` with a tiny model, logprobs equal to the
local judge's, and failures (down, 500, malformed JSON, timeout, no logprobs) as counted None or a clear error."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from posttrain.rewards.judge import Judge, JudgeConfig, build_judge
from posttrain.rewards.judge_http import HttpBackend, base_url
from posttrain.rewards.judge_local import LocalBackend
from posttrain.rewards.judge_pairwise import PairwiseJudge
from posttrain.rewards.judge_text import Fence, JudgeError
from posttrain.serve import ChatModel, make_server

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")


def _start(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    local = LocalBackend.from_pretrained(tiny_model_dir, chat=True, device="cpu")
    server = make_server(ChatModel(local.model, local.tokenizer, "nano"), port=0)
    yield local, _start(server)
    server.shutdown()
    server.server_close()


def test_logprobs_through_the_server_equal_the_local_judge(served):
    local, url = served
    remote = HttpBackend(url, top_logprobs=len(local.tokenizer))       # every token listed: nothing cut off
    fence = Fence("0123456789abcdef")
    qs = [PairwiseJudge(local, fence=fence).question("Which is right?", a, b, {})
          for a, b in [("2 + 2 = 4", "2 + 2 = 5"), ("yes", "no")]]
    want = local.choice_probs(qs, ["A", " A"], ["B", " B"])
    got = remote.choice_probs(qs, ["A", " A"], ["B", " B"])
    assert got == pytest.approx(want, abs=1e-4) and remote.stats["failed"] == 0


def test_server_reply_shape_and_bad_request(served):
    _, url = served
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "logprobs": True, "top_logprobs": 2}
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "x"})
    r = json.loads(urllib.request.urlopen(req).read())
    lp = r["choices"][0]["logprobs"]["content"]
    assert r["usage"]["completion_tokens"] == len(lp) <= 3 and len(lp[0]["top_logprobs"]) == 2
    assert lp[0]["top_logprobs"][0]["logprob"] >= lp[0]["logprob"] - 1e-6         # greedy: the top token
    bad = urllib.request.Request(url + "/v1/chat/completions", b'{"messages": "hi"}')
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad)
    assert e.value.code == 400 and "messages" in json.loads(e.value.read())["error"]["message"]


@pytest.mark.slow          # a fresh interpreter importing torch + transformers: ~20 s on 2 loaded cores
def test_posttrain_serve_runs_and_a_judge_scores_through_it(tiny_model_dir):
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-m", "posttrain", "serve", tiny_model_dir, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), proc.stderr.read()[-2000:]
        url = line.split(" on ")[1].split("/v1/")[0]
        assert url.startswith("http://127.0.0.1:")
        judge = build_judge(JudgeConfig(url=url + "/v1", model="nano", max_new_tokens=2))
        scores = judge(["Is 2 + 2 = 4?", "Is 2 + 2 = 5?"], ["yes", "no"])
        # a tiny model may not put Yes or No in its top 20: then its text decides, else None (counted)
        assert all(s is None or 0.0 <= s <= 1.0 for s in scores) and judge.backend.stats["failed"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_command_line_errors(capsys):
    from posttrain.serve import main

    assert main([]) == 2 and "usage: posttrain serve MODEL" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown option '--bogus'"):
        main(["m", "--bogus", "1"])
    with pytest.raises(SystemExit, match="--port expects a number, found 'x'"):
        main(["m", "--port", "x"])


class Misbehaving(BaseHTTPRequestHandler):
    mode = "ok"
    hits = 0

    def log_message(self, *a):
        pass

    def do_GET(self):  # noqa: N802
        self._send(200, b'{"data": []}')

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).hits += 1
        mode = self.mode
        if mode == "flaky":
            mode = "500" if type(self).hits % 2 else "text"
        if mode == "500":
            return self._send(500, b'{"error": {"message": "boom"}}')
        if mode == "malformed":
            return self._send(200, b'{"choices": [')
        if mode == "slow":
            time.sleep(1.0)
        content = {"text": "Yes", "neither": "Maybe", "slow": "Yes"}[mode]
        self._send(200, json.dumps({"choices": [{"message": {"content": content}}]}).encode())

    def _send(self, code, data):
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def bad_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    yield _start(server)
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("mode,expected,failed", [("text", 1.0, 0), ("neither", None, 0), ("500", None, 1),
                                                  ("malformed", None, 1), ("slow", None, 1), ("flaky", 1.0, 0)])
def test_failures_are_counted_none_never_zero(bad_server, mode, expected, failed):
    Misbehaving.mode, Misbehaving.hits = mode, 0
    b = HttpBackend(bad_server, timeout=0.3, retries=1, backoff=0.01)
    j = Judge(b)
    assert j(["p"], ["c"]) == [expected] and b.stats["failed"] == failed
    assert Misbehaving.hits == (2 if mode in ("500", "malformed", "slow", "flaky") else 1)   # retried once


def test_server_down_is_a_clear_error_at_start_and_none_mid_run(bad_server):
    with pytest.raises(JudgeError, match=r"judge server http://127.0.0.1:9 does not answer GET /v1/models"):
        HttpBackend("http://127.0.0.1:9", timeout=1)
    with pytest.raises(JudgeError, match="judge.url: expected http://HOST:PORT"):
        HttpBackend("localhost:8000")
    b = HttpBackend(bad_server, retries=0)
    b.url = "http://127.0.0.1:9"                    # the server went away mid-run
    assert Judge(b)(["p"], ["c"]) == [None] and b.stats["failed"] == 1
    assert base_url("http://h:1/v1/chat/completions") == base_url("http://h:1/v1/") == "http://h:1"


def test_pairwise_reply_naming_neither_a_nor_b_is_a_counted_none(bad_server):
    Misbehaving.mode, Misbehaving.hits = "neither", 0          # the server replies "Maybe" to A-or-B questions
    b = HttpBackend(bad_server, retries=0)
    j = PairwiseJudge(b)
    assert j.compare(["p"], ["x"], ["y"]) == [None]
    assert j.stats["none"] == 1 and j.stats["pairs"] == 0 and b.stats["no_logprobs"] == 2
