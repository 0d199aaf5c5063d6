"""A stand-in vLLM OpenAI server (stdlib only) for the fast vLLM-killed test, run as its own process.

    python tests/reliability/fake_vllm.py PORT EVENTS_FILE

It keeps runtime-loaded LoRA names in memory (so a restart forgets them, as vLLM does), answers 404
for a model name it does not know, and appends every load to EVENTS_FILE (one JSON line each).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOADED: dict[str, str] = {}


class Handler(BaseHTTPRequestHandler):
    events = ""

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path == "/v1/load_lora_adapter":
            name = body["lora_name"]
            if name in LOADED:
                self._send(400, {"error": {"message": f"The lora adapter '{name}' has already been loaded."}})
                return
            LOADED[name] = body["lora_path"]
            with open(self.events, "a") as fh:
                fh.write(json.dumps({"load": name}) + "\n")
            self._send(200, {})
        elif self.path == "/v1/unload_lora_adapter":
            LOADED.pop(body["lora_name"], None)
            self._send(200, {})
        elif self.path == "/v1/completions":
            model = body.get("model")
            if model not in LOADED:
                self._send(404, {"error": {"message": f"The model `{model}` does not exist."}})
                return
            n = int(body.get("max_tokens") or 1)
            self._send(200, {"id": "cmpl-fake", "object": "text_completion", "model": model,
                             "choices": [{"index": 0, "text": " x" * n, "token_ids": [1] * n,
                                          "finish_reason": "length", "logprobs": None}],
                             "usage": {"prompt_tokens": 2, "completion_tokens": n, "total_tokens": 2 + n}})
        else:
            self._send(404, {"error": {"message": "not found"}})


if __name__ == "__main__":
    Handler.events = sys.argv[2]
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
