"""Bounded load test of /v1/completions on loopback: many repositories, a few hot ones, local engine.

1. Start the service (uvicorn, embedded defaults, local engine with `--slots` adapter slots) on a free
   loopback port, register `--repos` small repositories and wait for their adapters.
2. Run wrk (Debian package `wrk`) for `--duration` seconds with `--connections` connections: each request
   names a repository, `--hot-share` of them one of `--hot` hot repositories, the rest any of the others
   (so the adapter LRU keeps swapping). Every response must be a 200; latency percentiles and throughput
   come from wrk; the server's RSS is sampled all along (it must stay bounded: the LRU holds).
3. Burst beyond capacity: `--burst` concurrent requests against an in-flight cap of `--inflight`: the
   excess must get 503 (or 429) with Retry-After at once, none may time out.

The base model is a tiny random Llama by default (`--model tiny`: measures the service machinery: routing,
DB lookups, adapter hot-loading, batching) or the bundled SmolLM2-135M (`--model bundled`).

Run: python bench/load.py [--no-write]   (results: docs/BENCHMARKS.md, section "## Load")
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_section
from testkit.models import tiny_model

SECTION = "## Load"
ROOT = Path(__file__).resolve().parents[1]

LUA = r"""
local models = {%(models)s}
local hot, n_hot, hot_share = %(n_hot)d, %(n_hot)d, %(hot_share)f
local max_tokens = %(max_tokens)d
local statuses = {}
local thread_list = {}
math.randomseed(%(seed)d)

function setup(thread)
  table.insert(thread_list, thread)
end

function init(args)
  counts = {}
end

request = function()
  local i
  if math.random() < hot_share then i = math.random(1, n_hot) else i = math.random(n_hot + 1, #models) end
  local body = '{"model": "' .. models[i] .. '", "prompt": "def compute(", "max_tokens": ' .. max_tokens ..
               ', "temperature": 0}'
  return wrk.format("POST", "/v1/completions", {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

done = function(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(thread_list) do
    local c = t:get("counts")
    for k, v in pairs(c) do merged[tostring(k)] = (merged[tostring(k)] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, '"' .. k .. '": ' .. v) end
  io.write(string.format('WRKJSON {"requests": %%d, "duration_us": %%d, "errors": {"connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d}, "p50_ms": %%.2f, "p90_ms": %%.2f, "p99_ms": %%.2f, ' ..
    '"max_ms": %%.2f, "mean_ms": %%.2f, "statuses": {%%s}}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, latency.mean / 1000, table.concat(parts, ", ")))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_repos(root: Path, n: int) -> list[Path]:
    import git

    paths = []
    for i in range(n):
        path = root / f"lib{i:03d}"
        (path / f"lib{i:03d}").mkdir(parents=True)
        (path / f"lib{i:03d}" / "core.py").write_text(
            f"def compute_{i}(value: int, scale: int = {i + 1}) -> int:\n    \"\"\"Scale a value.\"\"\"\n"
            f"    return value * scale\n\n\nclass Engine{i}:\n    def run_{i}(self, n: int) -> list[int]:\n"
            f"        return [compute_{i}(k) for k in range(n)]\n")
        repo = git.Repo.init(path, initial_branch="main")
        with repo.config_writer() as cw:
            cw.set_value("user", "name", "bench").set_value("user", "email", "bench@example.com")
        repo.git.add(A=True)
        repo.index.commit("init")
        paths.append(path)
    return paths


def rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB."""
    cur = peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    return cur, peak


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.samples = pid, every, []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.samples.append(rss_kib(self.pid)[0])
            except OSError:
                return
            self._halt.wait(self.every)

    def stop(self) -> list[int]:
        self._halt.set()
        self.join(5)
        return self.samples


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    import httpx

    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "service.api.app:create_app", "--factory",
                                 "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                                 "--log-level", "warning"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("server did not start")


def register_all(base: str, repos: list[Path]) -> list[str]:
    import httpx

    names, jobs = [], []
    with httpx.Client(base_url=base, timeout=60) as c:
        for path in repos:
            r = c.post("/repos", json={"url": str(path), "name": path.name})
            r.raise_for_status()
            names.append(path.name)
            jobs.append(r.json()["job"]["id"])
        for job in jobs:
            while True:
                j = c.get(f"/jobs/{job}").json()
                if j["status"] == "failed":
                    raise RuntimeError(j["error"])
                if j["status"] == "succeeded":
                    break
                time.sleep(0.2)
    return names


async def burst(base: str, models: list[str], n: int, timeout: float) -> dict[str, object]:
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as c:
        async def one(i: int):
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/completions", json={"model": models[i % len(models)], "prompt": "def compute(",
                                                          "max_tokens": 16, "temperature": 0})
                return r.status_code, r.headers.get("retry-after"), time.perf_counter() - t0
            except httpx.TimeoutException:
                return "timeout", None, time.perf_counter() - t0

        results = await asyncio.gather(*(one(i) for i in range(n)))
    statuses: dict[str, int] = {}
    for status, _, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    refused = [(s, ra, t) for s, ra, t in results if s in (429, 503)]
    return {"n": n, "statuses": statuses, "refused_with_retry_after": sum(1 for _, ra, _ in refused if ra),
            "refused": len(refused), "max_refusal_ms": round(max((t for _, _, t in refused), default=0) * 1e3, 1),
            "max_ms": round(max(t for _, _, t in results) * 1e3, 1)}


MODEL_TEXT = {"tiny": "tiny random Llama (2 layers, hidden 64): measures the service, not the model",
              "bundled": "bundled SmolLM2-135M-Instruct with the shipped hypernetwork"}


def run_one(args: argparse.Namespace, model: str) -> dict:
    """One server with one base model: ingest, wrk load, burst; returns the numbers and the checks."""
    work = Path(tempfile.mkdtemp(prefix="c2l-load-"))
    proc = None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODE2LORA_")}  # no shared Redis/PG leaks in
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                    "CODE2LORA_DATA_DIR": str(work / "data"), "CODE2LORA_ALLOW_LOCAL_REPOS": "true",
                    "CODE2LORA_ENGINE": "local", "CODE2LORA_ENGINE_SLOTS": str(args.slots),
                    "CODE2LORA_MAX_INFLIGHT_COMPLETIONS": str(args.inflight), "CODE2LORA_JSON_LOGS": "false"})
        if model == "tiny":
            model_dir, ckpt = tiny_model(work)
            env.update(CODE2LORA_BASE_MODEL_PATH=str(model_dir), CODE2LORA_HYPERNET_CHECKPOINT=str(ckpt))
        repos = make_repos(work / "repos", args.repos)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = start_server(env, port, work / "server.log")
        t0 = time.perf_counter()
        names = register_all(base, repos)
        ingest_s = time.perf_counter() - t0
        rss_before = rss_kib(proc.pid)[0]

        hot, cold = names[:args.hot], names[args.hot:]
        script = work / "load.lua"
        script.write_text(LUA % {"models": ", ".join(f'"{m}"' for m in hot + cold), "n_hot": len(hot),
                                 "hot_share": args.hot_share, "max_tokens": args.max_tokens, "seed": 7})
        sampler = RssSampler(proc.pid)
        sampler.start()
        out = subprocess.run(["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.duration}s",
                              "--timeout", "30s", "-s", str(script), base], capture_output=True, text=True,
                             timeout=args.duration + 120)
        samples = sampler.stop()
        m = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
        if m is None:
            raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")
        wrk = json.loads(m.group(1))
        import httpx

        health = httpx.get(base + "/healthz", timeout=10).json()
        loaded = health["engine"].get("loaded", [])
        rss_after, rss_peak = rss_kib(proc.pid)

        burst_res = asyncio.run(burst(base, names, args.burst, args.burst_timeout))
        ok_after = httpx.post(base + "/v1/completions", json={"model": names[0], "prompt": "def ", "max_tokens": 4},
                              timeout=60).status_code
        load_avg = os.getloadavg()[0]
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)

    errors = sum(wrk["errors"].values())
    non200 = {k: v for k, v in wrk["statuses"].items() if k != "200"}
    result = {"model": model, "wrk": wrk, "errors": errors, "non200": sum(non200.values()),
              "rps": wrk["requests"] / (wrk["duration_us"] / 1e6), "ingest_s": ingest_s, "loaded": loaded,
              "rss_mib": {"before": rss_before // 1024, "max_during": max(samples, default=0) // 1024,
                          "after": rss_after // 1024, "peak_hwm": rss_peak // 1024},
              "burst": burst_res, "after_burst": ok_after, "load_avg": load_avg}
    result["checks"] = {
        "no errors under load": errors == 0 and not non200,
        "adapter LRU bounded": len(loaded) <= args.slots,
        "burst: excess refused with Retry-After, no timeouts": (
            "timeout" not in burst_res["statuses"] and burst_res["refused"] > 0
            and burst_res["refused_with_retry_after"] == burst_res["refused"]
            and set(burst_res["statuses"]) <= {"200", "429", "503"}),
        "serving after the burst": ok_after == 200,
    }
    return result


def section(args: argparse.Namespace, results: list[dict]) -> str:
    rows, notes = [], []
    for r in results:
        w, mem, b = r["wrk"], r["rss_mib"], r["burst"]
        rows.append(f"| {r['model']} | {w['requests']} | {r['errors']} / {r['non200']} | {r['rps']:.1f} req/s | "
                    f"{w['p50_ms']:.0f} ms | {w['p90_ms']:.0f} ms | {w['p99_ms']:.0f} ms | {w['max_ms']:.0f} ms | "
                    f"{mem['before']} / {mem['max_during']} / {mem['after']} MiB | {len(r['loaded'])} of {args.slots} | "
                    f"{r['load_avg']:.1f} |")
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(b["statuses"].items()))
        notes.append(f"- {r['model']}: {MODEL_TEXT[r['model']]}. Burst of {b['n']} concurrent completions against an "
                     f"in-flight cap of {args.inflight}: {statuses}; Retry-After on {b['refused_with_retry_after']} of "
                     f"{b['refused']} refusals, slowest refusal {b['max_refusal_ms']:.0f} ms, slowest answer "
                     f"{b['max_ms']:.0f} ms, no timeouts; a completion right after: {r['after_burst']}. Ingest of the "
                     f"{args.repos} repositories before the run: {r['ingest_s']:.1f} s.")
    models = ",".join(r["model"] for r in results)
    return f"""{SECTION}

Command (repository root, venv active; `wrk` from Debian):

    python bench/load.py --model {models} --repos {args.repos} --hot {args.hot} --duration {args.duration} \\
        --connections {args.connections} --slots {args.slots} --inflight {args.inflight} --burst {args.burst}

Machine: {machine()}; shared with other engineers' tests and training during the run (1-minute load average in
the table), so absolute numbers are pessimistic. Service: uvicorn, one process, embedded defaults (SQLite,
in-process cache and queue), local engine with {args.slots} adapter slots, 1 intra-op thread. Load: wrk,
{args.threads} threads, {args.connections} connections, {args.duration} s, on loopback; {args.repos} repositories with
their own adapters, {args.hot_share:.0%} of requests on {args.hot} hot ones and the rest spread over the other
{args.repos - args.hot} (so the LRU keeps loading and evicting); `max_tokens` {args.max_tokens}, greedy. RSS of the
server process: after ingest / highest sample during the run (every 0.5 s) / after.

| base model | requests | errors / non-200 | throughput | p50 | p90 | p99 | max | RSS | adapters loaded | load avg |
|---|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n\n" + "\n".join(notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny, bundled, or both comma-separated")
    ap.add_argument("--repos", type=int, default=24)
    ap.add_argument("--hot", type=int, default=3)
    ap.add_argument("--hot-share", type=float, default=0.8)
    ap.add_argument("--slots", type=int, default=6, help="adapter slots of the local engine (LRU)")
    ap.add_argument("--duration", type=int, default=30, help="seconds of wrk load")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--inflight", type=int, default=16, help="completions in flight before 503")
    ap.add_argument("--burst", type=int, default=128, help="concurrent requests of the burst (> --inflight)")
    ap.add_argument("--burst-timeout", type=float, default=60.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not models or any(m not in MODEL_TEXT for m in models):
        sys.exit(f"--model: choose from {sorted(MODEL_TEXT)}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    assert args.connections <= args.inflight < args.burst

    results = []
    for model in models:
        r = run_one(args, model)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "checks"}, indent=2, default=str))
        for name, ok in r["checks"].items():
            print(f"{'PASS' if ok else 'FAIL'}: {name} ({model})")
    if not args.no_write:
        write_section(SECTION, section(args, results))
        print(f"wrote {SECTION} to docs/BENCHMARKS.md")
    if not all(all(r["checks"].values()) for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
