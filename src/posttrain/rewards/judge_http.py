"""A judge model behind any OpenAI-compatible server (`POST {url}/v1/chat/completions`), stdlib only.

The same two operations as `LocalBackend` (`judge_local.py`):
- `choice_probs(questions, first, second)`: from the reply's first-token `top_logprobs` when the
  server gives them: P(first) / (P(first) + P(second)) with P(first) = the summed probability of the
  listed tokens equal (spaces stripped) to one of the `first` words. When the server gives no
  logprobs, or lists neither side, the reply's text decides: 1.0 when its first line is a `first`
  word, 0.0 when a `second` word, else None.
- `generate(questions, max_new_tokens)`: the reply's text (greedy: temperature 0).

Failures never become a score: each request has a `timeout`; a connection error, a timeout, a 5xx or
429, or a body that is not the expected JSON is retried `retries` times with backoff 0.5 s, 1 s, 2 s,
... and then gives None for that question (counted in `stats`). A 4xx other than 429 is not retried
(the request itself is wrong). At most `max_concurrency` requests are in flight. The server is checked
once when the backend is made (`GET {url}/v1/models`): a server that is down then is a `JudgeError`
naming the URL, before training starts; a server that goes down mid-run gives None rows, not a crash.
"""
from __future__ import annotations

import json
import math
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from .judge_text import JudgeError

RETRY_STATUS = {429, 500, 502, 503, 504}


def base_url(url: str) -> str:
    """`http://host:port` or `.../v1` or `.../v1/chat/completions` -> the part before `/v1`."""
    url = url.rstrip("/")
    for tail in ("/chat/completions", "/v1"):
        if url.endswith(tail):
            url = url[: -len(tail)]
    return url


class HttpBackend:
    def __init__(self, url: str, *, model: str | None = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 0.5, max_concurrency: int = 8, max_tokens: int = 8, top_logprobs: int = 20,
                 check: bool = True):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise JudgeError(f"judge.url: expected http://HOST:PORT, found {url!r}")
        if max_concurrency < 1 or retries < 0 or timeout <= 0:
            raise JudgeError(f"judge: max_concurrency >= 1, retries >= 0, timeout > 0 expected; found "
                             f"{max_concurrency}, {retries}, {timeout}")
        self.url, self.model = base_url(url), model or "default"
        self.name = f"{self.url}#{self.model}"
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.max_concurrency, self.max_tokens, self.top_logprobs = max_concurrency, max_tokens, top_logprobs
        self.stats = {"requests": 0, "retries": 0, "failed": 0, "no_logprobs": 0}
        self.last_error = ""
        if check:
            self.check()

    def check(self) -> None:
        """A `JudgeError` naming the URL unless `GET /v1/models` answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models", timeout=self.timeout) as r:
                json.loads(r.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise JudgeError(f"judge server {self.url} does not answer GET /v1/models ({exc}); start one, e.g. "
                             f"`posttrain serve MODEL --port PORT`, or fix judge.url") from None

    def _post(self, body: dict) -> dict | None:
        """The decoded reply, or None after `retries` failed retries (reason in `last_error`)."""
        data = json.dumps(body).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.stats["requests"] += 1
            req = urllib.request.Request(f"{self.url}/v1/chat/completions", data=data,
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    reply = json.loads(r.read())
                _content(reply)                     # the shape we need, or ValueError
                return reply
            except urllib.error.HTTPError as exc:
                self.last_error = f"HTTP {exc.code}"
                if exc.code not in RETRY_STATUS:
                    break
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                self.last_error = f"malformed reply: {exc}"
        self.stats["failed"] += 1
        return None

    def _ask_all(self, questions: Sequence[str], **extra) -> list[dict | None]:
        bodies = [{"model": self.model, "messages": [{"role": "user", "content": q}], "temperature": 0.0,
                   "max_tokens": self.max_tokens, **extra} for q in questions]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, max(1, len(bodies)))) as pool:
            return list(pool.map(self._post, bodies))

    def choice_probs(self, questions: Sequence[str], first: Sequence[str], second: Sequence[str]) -> list[float | None]:
        replies = self._ask_all(questions, logprobs=True, top_logprobs=self.top_logprobs)
        return [None if r is None else self._choice(r, first, second) for r in replies]

    def _choice(self, reply: dict, first: Sequence[str], second: Sequence[str]) -> float | None:
        a, b = {w.strip() for w in first}, {w.strip() for w in second}
        top = _first_top_logprobs(reply)
        if top:
            pa = sum(math.exp(lp) for t, lp in top if t.strip() in a)
            pb = sum(math.exp(lp) for t, lp in top if t.strip() in b)
            if pa + pb > 0:
                return pa / (pa + pb)
        self.stats["no_logprobs"] += 1
        text = _content(reply).strip()
        line = text.split("\n", 1)[0].strip().rstrip(".!") if text else ""
        return 1.0 if line in a else 0.0 if line in b else None

    def generate(self, questions: Sequence[str], max_new_tokens: int) -> list[str | None]:
        replies = self._ask_all(questions, max_tokens=max_new_tokens)
        return [None if r is None else _content(r) for r in replies]


def _content(reply: dict) -> str:
    content = reply["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise ValueError(f"choices[0].message.content is {type(content).__name__}, not text")
    return content


def _first_top_logprobs(reply: dict) -> list[tuple[str, float]]:
    """(token, logprob) pairs of the first generated token's `top_logprobs`; [] when absent or malformed."""
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
        return [(str(t["token"]), float(t["logprob"])) for t in first["top_logprobs"]]
    except (KeyError, IndexError, TypeError, ValueError):
        return []
