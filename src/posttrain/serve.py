"""`posttrain serve MODEL [--port 8000] [--host 127.0.0.1] [--gguf-file F]`: a Hugging Face causal LM
(a hub name, a folder such as a run's `final/`, or `builtin:NAME`) on an OpenAI-compatible API.

Endpoints (stdlib `http.server`, one request generates at a time, no streaming):
- `GET /v1/models` -> `{"object": "list", "data": [{"id": NAME, "object": "model"}]}`
- `POST /v1/chat/completions` with `messages` (role/content), `max_tokens` (default 256),
  `temperature` (0 = greedy, the default here; > 0 samples, with `top_p`), `seed`, `logprobs`,
  `top_logprobs` (0..vocab). The reply has OpenAI's shape: `choices[0].message.content`,
  `choices[0].logprobs.content[i] = {token, logprob, top_logprobs: [{token, logprob}]}` (log-softmax
  of the model's raw logits at each generated position), `finish_reason` ("stop" or "length"), `usage`.
Messages go through the tokenizer's chat template (assistant turn opened); a tokenizer without one
gets the contents joined by blank lines. Bad requests get 400 with `{"error": {"message": ...}}`.
Binds 127.0.0.1 by default: there is no authentication.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch


class ChatModel:
    """A causal LM answering chat-completion requests (see the module docstring)."""

    def __init__(self, model, tokenizer, name: str):
        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        self.lock = threading.Lock()

    @classmethod
    def load(cls, path: str, gguf_file: str | None = None, device=None) -> "ChatModel":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from posttrain.core.models import resolve_path

        src = resolve_path(path)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **extra)
        tok = AutoTokenizer.from_pretrained(src, **extra)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(model.to(device), tok, name=str(path))

    def render(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    @torch.no_grad()
    def complete(self, body: dict) -> dict:
        messages, opts = _check_request(body, len(self.tokenizer))
        text = self.render(messages)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=not getattr(
            self.tokenizer, "chat_template", None))["input_ids"].to(next(self.model.parameters()).device)
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        sample = opts["temperature"] > 0
        kw = dict(do_sample=True, temperature=opts["temperature"], top_p=opts["top_p"]) if sample else dict(do_sample=False)
        with self.lock:
            if opts["seed"] is not None:
                torch.manual_seed(opts["seed"])
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=opts["max_tokens"],
                                      pad_token_id=pad, return_dict_in_generate=True, output_logits=True, **kw)
        new = out.sequences[0, ids.shape[1]:].tolist()
        stopped = bool(new) and eos is not None and new[-1] == eos
        content = self.tokenizer.decode(new, skip_special_tokens=True)
        choice = {"index": 0, "message": {"role": "assistant", "content": content},
                  "finish_reason": "stop" if stopped else "length", "logprobs": None}
        if opts["logprobs"]:
            choice["logprobs"] = {"content": self._logprobs(new, out.logits, opts["top_logprobs"])}
        return {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": self.name, "choices": [choice],
                "usage": {"prompt_tokens": ids.shape[1], "completion_tokens": len(new),
                          "total_tokens": ids.shape[1] + len(new)}}

    def _logprobs(self, new: list[int], logits, k: int) -> list[dict]:
        rows = []
        for tok, step in zip(new, logits):
            lp = torch.log_softmax(step[0].float(), dim=-1)
            top = torch.topk(lp, k) if k else None
            rows.append({"token": self.tokenizer.decode([tok]), "logprob": float(lp[tok]),
                         "top_logprobs": [] if top is None else [
                             {"token": self.tokenizer.decode([int(i)]), "logprob": float(v)}
                             for v, i in zip(top.values.tolist(), top.indices.tolist())]})
        return rows


class RequestError(ValueError):
    """A malformed request: answered with 400."""


def _check_request(body, vocab: int) -> tuple[list[dict], dict]:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise RequestError("'messages' must be a non-empty list of {role, content} with text content")

    def number(key, default, lo, hi, kind=float):
        v = body.get(key, default)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise RequestError(f"'{key}' must be a number in [{lo}, {hi}], found {v!r}")
        return kind(v)

    opts = {"max_tokens": number("max_tokens", 256, 1, 32768, int), "temperature": number("temperature", 0.0, 0, 10),
            "top_p": number("top_p", 1.0, 0.0, 1.0), "top_logprobs": number("top_logprobs", 0, 0, vocab, int),
            "seed": body.get("seed"), "logprobs": bool(body.get("logprobs", False))}
    if opts["seed"] is not None and not isinstance(opts["seed"], int):
        raise RequestError(f"'seed' must be an integer, found {opts['seed']!r}")
    return [{"role": m["role"], "content": m["content"]} for m in messages], opts


def make_server(chat: ChatModel, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """The HTTP server (not started: call `serve_forever()`); port 0 picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):       # quiet: one line per request on stderr only when asked
            pass

        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": chat.name, "object": "model"}]})
            self._send(404, {"error": {"message": f"no route GET {self.path}"}})

        def do_POST(self):  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, {"error": {"message": f"no route POST {self.path}"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                self._send(200, chat.complete(body))
            except (RequestError, json.JSONDecodeError) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
            except Exception as exc:  # noqa: BLE001 - a failed generation is the server's 500, not a dead server
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str]) -> int:
    usage = "usage: posttrain serve MODEL [--port 8000] [--host 127.0.0.1] [--gguf-file FILE]"
    if not argv or argv[0] in ("-h", "--help"):
        print(usage + "\n\n" + __doc__.split("\n\n", 1)[1])
        return 0 if argv else 2
    model, opts, it = argv[0], {"--port": "8000", "--host": "127.0.0.1", "--gguf-file": None}, iter(argv[1:])
    for a in it:
        key, _, val = a.partition("=")
        if key not in opts:
            raise SystemExit(f"error: unknown option '{a}'\n{usage}")
        opts[key] = val or next(it, None)
    if not str(opts["--port"]).isdigit():
        raise SystemExit(f"error: --port expects a number, found {opts['--port']!r}")
    from posttrain.names import resolve

    model = resolve(model)  # builtin:NAME -> its local folder (a plugin's name)
    server = make_server(ChatModel.load(model, opts["--gguf-file"]), opts["--host"], int(opts["--port"]))
    host, port = server.server_address[:2]
    print(f"serving {model} on http://{host}:{port}/v1/chat/completions (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("stopped", file=sys.stderr)
    return 0
