"""A fake vLLM OpenAI server for httpx.MockTransport: runtime LoRA routes, /v1/models, completions, health.

Completions answer ``"<model>:ok"``, so a test sees which engine-side name served a request.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx


class FakeVllm:
    """Just enough of vLLM's OpenAI server: runtime LoRA routes, completions, health."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.refuse: dict[str, tuple[int, str]] = {}
        self.down = False
        self.api_key: str | None = None  # as vLLM's --api-key: guards /v1/*, not /health
        self.base_name = "base-model"  # the served base model (answers without being loaded)
        # the CPU build's batching defect: a base row that arrives right after a LoRA row gets the LoRA applied
        self.defect = False
        self.lora_changes_output = True  # False: every LoRA answers like the base model
        self._last_completion_lora = False
        self.resolver_dir: str | None = None  # as VLLM_LORA_RESOLVER_CACHE_DIR: unknown names load from <dir>/<name>


    def restart(self) -> None:
        self.loaded.clear()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        body = json.loads(request.content or b"{}")
        if self.api_key and path.startswith("/v1") and request.headers.get("authorization") != f"Bearer {self.api_key}":
            self.calls.append(("unauthorized", path))
            return httpx.Response(401, json={"error": "Unauthorized"})
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            self.calls.append(("models", ""))
            cards = [{"id": self.base_name, "root": "/base", "parent": None}]
            cards += [{"id": name, "root": root, "parent": "base-model"} for name, root in self.loaded.items()]
            return httpx.Response(200, json={"object": "list", "data": cards})
        if path == "/v1/load_lora_adapter":
            name = body["lora_name"]
            self.calls.append(("load", name))
            if name in self.refuse:
                status, msg = self.refuse[name]
                return httpx.Response(status, json={"error": {"message": msg, "type": "BadRequestError",
                                                              "param": None, "code": status}})
            if name in self.loaded:
                return httpx.Response(400, json={"error": {"message": f"The lora adapter '{name}' has already "
                                                           "been loaded.", "type": "InvalidUserInput", "code": 400}})
            self.loaded[name] = body["lora_path"]
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' added successfully.")
        if path == "/v1/unload_lora_adapter":
            self.calls.append(("unload", body["lora_name"]))
            if self.loaded.pop(body["lora_name"], None) is None:
                return httpx.Response(404, json={"error": {"message": "not found", "code": 404}})
            return httpx.Response(200, text="Success")
        if path == "/v1/completions":
            model = body["model"]
            self.calls.append(("complete", model))
            is_base = model == self.base_name
            changed = not is_base and self.lora_changes_output
            if is_base and self.defect and self._last_completion_lora:
                changed = True
            self._last_completion_lora = not is_base
            lps = [-0.1, -0.2] if changed else [-0.3, -0.4]
            if model not in self.loaded and not is_base and self.resolver_dir:
                folder = Path(self.resolver_dir, model)
                if (folder / "adapter_config.json").exists():
                    self.calls.append(("resolved", model))
                    self.loaded[model] = str(folder)
            if model not in self.loaded and not is_base:
                return httpx.Response(404, json={"error": {"message": f"The model `{model}` does not exist.",
                                                           "type": "NotFoundError", "param": "model", "code": 404}})
            n = body.get("n", 1)
            if body.get("stream"):
                chunks = []
                for i in range(n):
                    chunks.append({"choices": [{"index": i, "text": f"{model}:", "finish_reason": None}]})
                    chunks.append({"choices": [{"index": i, "text": "ok", "finish_reason": "length"}]})
                chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n,
                                                        "total_tokens": 3 + 2 * n}})
                text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
                return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
            return httpx.Response(200, json={
                "choices": [{"index": i, "text": f"{model}:ok", "finish_reason": "length", "token_ids": [1, 2],
                             "logprobs": {"tokens": ["a", "b"], "token_logprobs": lps,
                                          "top_logprobs": None, "text_offset": [0, 1]}} for i in range(n)],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2 * n, "total_tokens": 3 + 2 * n}})
        return httpx.Response(404)
