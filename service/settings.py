"""One settings object for the whole service (env vars `CODE2LORA_*`, `.env` supported)."""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Service configuration; every field can be set with `CODE2LORA_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="CODE2LORA_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".code2lora"), description="Root for the SQLite file, workspaces and artifacts.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file under data_dir.")
    redis_url: str | None = Field(None, description="Redis URL; default: none (in-process cache and jobs).")
    # Typed as the Path they always are once built: the None default (not validated) lasts until _fill_paths.
    artifact_dir: Path = Field(None, validate_default=False,  # type: ignore[assignment]
                               description="Adapter artifact folder; default: data_dir/artifacts.")
    workspace_dir: Path = Field(None, validate_default=False,  # type: ignore[assignment]
                                description="Clone workspace; default: data_dir/workspaces.")
    model_cache: Path = Field(Path.home() / ".cache" / "code2lora" / "models", description="Prepared base models.")
    base_model_path: Path | None = Field(None, description="HF causal-LM folder; default: the prepared bundled model.")
    hypernet_checkpoint: Path | None = Field(None, description="Hypernetwork checkpoint; default: the shipped one.")
    allow_adapters_off: bool = Field(False, description="When the hypernetwork checkpoint does not fit the base "
                                     "model, serve anyway with adapters switched off (every adapter a no-op; "
                                     "/healthz, /v1/models and the dashboard say so) instead of refusing to start.")

    engine: Literal["local", "vllm", "none"] = "local"
    vllm_url: str = Field("http://127.0.0.1:8001", description="The vLLM server (one replica).")
    vllm_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Several vLLM replicas (a JSON list or comma-separated URLs); each "
        "adapter is served by one replica chosen by rendezvous hashing, the next one in its order when that replica "
        "is down (docs/DEPLOY.md). Empty: vllm_url alone.")
    vllm_timeout_s: float = Field(120.0, gt=0, description="Limit on one call to vLLM (a completion included); a "
                                  "call past it counts as the replica being unavailable (503, or the next replica).")
    vllm_lora_resolver: bool = Field(False, description="vLLM loads adapters itself with its filesystem LoRA "
                                     "resolver: each replica started with VLLM_LORA_RESOLVER_CACHE_DIR=<artifact_dir> "
                                     "(same path) and --model equal to the adapters' base_model_name_or_path; the "
                                     "service then asks for an adapter by its artifact folder name and never calls "
                                     "/v1/load_lora_adapter for it (docs/DEPLOY.md).")
    vllm_api_key: SecretStr | None = Field(None, description="Sent as a bearer token on every call to vLLM (one of "
                                           "the keys vLLM was started with, --api-key). vLLM's key guards its /v1 "
                                           "routes only (docs/DEPLOY.md): keep vLLM on loopback or a private network.")
    vllm_base_mode: Literal["auto", "zero-adapter", "plain"] = Field(
        "auto", description="How model=base reaches vLLM: plain (the base model), zero-adapter (an all-zero LoRA, for "
        "a vLLM that applies a LoRA to base rows batched with LoRA rows), or auto: probe vLLM for that defect on the "
        "first base request and use the zero adapter only when it shows (docs/DEPLOY.md).")
    engine_slots: int = Field(8, ge=1, description="Adapters held by the engine at once (LRU).")
    repo_vocabulary: bool = Field(True, description="Repository-vocabulary decoding on /v1/completions for a "
                                  "repository's model (local engine): the identifiers a completion writes stay on "
                                  "names the repository or the prompt knows (hypernet.decoding, docs/EVAL.md); a "
                                  "request's repo_vocabulary field overrides it.")
    repo_vocabulary_penalty: float = Field(math.inf, gt=0, description="inf masks every other name; a finite "
                                           "value (nats) only lowers them.")

    queue: Literal["inprocess", "rq"] = Field("inprocess", description="Job queue; rq needs redis_url.")
    host: str = "127.0.0.1"
    port: int = 8000

    allow_local_repos: bool = Field(False, description="Accept local paths and file:// URLs in POST /repos.")
    clone_timeout_s: float = Field(300.0, gt=0)
    # Where git may connect (issue 21 Medium 4): remote hosts that are or resolve to loopback, link-local, private
    # or unspecified addresses are refused (at registration, 422, and again at clone time) unless named here.
    allowed_git_hosts: list[str] = Field(default_factory=list, description="Host names, addresses or networks "
                                         "(CIDR) git may reach although they are not public, e.g. an internal "
                                         "GitLab: [\"gitlab.internal\", \"10.0.0.0/8\"].")
    clone_stall_timeout_s: float = Field(30.0, gt=0, description="A remote that connects but sends nothing (TLS "
                                         "handshake, ssh banner, transfer) fails after this long.")
    max_clones_per_host: int = Field(1, ge=0, description="Clones/fetches from one host at a time per process "
                                     "(in-process queue; more wait in the queue, not on a worker; 0 = no limit).")
    job_workers: int = Field(2, ge=1, description="In-process job threads (clones run in parallel; the "
                             "hypernetwork and scoring run one job at a time).")
    register_rate_per_min: float = Field(30.0, ge=0, description="Registrations (POST /repos, the dashboard "
                                         "form) per client per minute (0 = no limit).")
    register_burst: int = Field(10, ge=1, description="Burst of the registration rate limit.")
    webhook_replay_window_s: int = Field(7 * 86400, gt=0, description="Push deliveries (their ids and signed "
                                         "bodies) are remembered this long: a replay queues nothing.")
    max_repo_bytes: int = Field(500 * 1024 * 1024, gt=0, description="Checkout size limit.")
    max_file_bytes: int = Field(1_000_000, gt=0, description="Files larger than this are skipped by extraction.")
    job_lock_ttl_s: int = Field(900, gt=0, description="Per-repository job lock expiry, renewed by the job's "
                                "heartbeat (a crashed worker's lock goes stale after it).")
    job_heartbeat_s: float = Field(10.0, gt=0, description="A running job's heartbeat period; a job whose heartbeat "
                                   "is 6 periods old is re-queued by a worker's reaper (its process died).")
    job_timeout_s: int = Field(3600, gt=0, description="Hard limit on one job's run time (RQ job timeout).")

    # Measured versions: every new version is scored on a held-out slice of the repository (never shown to the
    # hypernetwork or to refinement) against the base model and the active version (service/evaluation.py).
    eval_enabled: bool = Field(True, description="Score every new version on the held-out slice.")
    # The scoring budget, in counts (hypernet.metrics.MetricBudget), so that a version's scores repeat exactly;
    # the defaults take seconds per version on this CPU with the bundled model (three arms: base, active, candidate).
    eval_chunks: int = Field(4, ge=1, description="Teacher-forced loss windows per arm.")
    eval_seq_len: int = Field(128, ge=16, description="Tokens per loss window.")
    eval_cuts: int = Field(8, ge=0, description="Identifier-completion cut points per arm.")
    eval_lines: int = Field(0, ge=0, description="Next-line completion cases per arm (generation is the slow part; "
                            "0 = off).")
    eval_min_files: int = Field(4, ge=2, description="Repositories with fewer source files are too small to "
                                "measure: no held-out slice, versions say so.")
    eval_heldout_fraction: float = Field(0.15, gt=0, lt=1, description="Share of non-test files held out.")
    eval_heldout_test_fraction: float = Field(0.5, gt=0, lt=1, description="Share of test files held out "
                                              "(tests are held out preferably).")
    eval_split_seed: int = Field(0, description="Seed of the path hash that decides the held-out split.")
    promote_metric: str = Field("ident_loss", description="Metric the promotion gate compares (lower is better "
                                "for losses and rates, higher for exact match).")
    promote_tolerance: float = Field(0.02, ge=0, description="How much worse than the active version a "
                                     "candidate may be on promote_metric and still become active.")

    # Refinement: train the active adapter's A and B on the repository's own context files.
    refine_after_ingest: bool = Field(False, description="Queue a refine job after every ingest/regenerate.")
    refine_steps: int = Field(40, ge=1, description="Optimizer steps of one refinement.")
    refine_max_seconds: float = Field(75.0, gt=0, description="Wall-time cap of one refinement's training.")
    refine_lr: float = Field(3e-3, gt=0, description="Adam learning rate on A and B (3e-3 chosen on validation, docs/EVAL.md).")
    refine_lr_decay: bool = Field(False, description="Cosine decay of the refinement learning rate to a tenth "
                                  "over the steps (else constant).")
    refine_select: Literal["objective", "ident"] = Field(
        "objective", description="What refinement's validation selects on: the weighted training objective, or the "
        "identifier loss while the all-token loss is no worse than the start's.")
    refine_kl_weight: float = Field(1.0, ge=0, description="Weight of the KL to the starting adapter's predictions.")
    refine_kl_identifiers: bool = Field(False, description="Apply the KL term on repository-identifier tokens too "
                                        "(else on the other tokens only; docs/EVAL.md: won on validation, not on test).")
    refine_ident_weight: float = Field(3.0, ge=1, description="Loss weight of repository-identifier tokens.")
    refine_seq_len: int = Field(128, ge=16, description="Tokens per training window.")
    refine_batch: int = Field(2, ge=1, description="Windows per step.")
    refine_sample_by_identifiers: bool = Field(True, description="Draw training windows weighted by their "
                                               "repository-identifier tokens (else uniformly).")
    refine_method: Literal["supervised", "rl"] = Field(
        "supervised", description="How a refine job trains: `supervised` (identifier-weighted next-token loss) or "
        "`rl` (sampled rollouts from cut points of the context files, rewarded per identifier that exists in the "
        "repository's symbol table, imports or builtins, plus chrF against the true continuation; docs/EVAL.md).")

    cache_ttl_s: int = Field(24 * 3600, gt=0, description="TTL of adapter bytes in Redis.")
    cache_max_entries: int = Field(256, ge=1, description="LRU bound on cached adapters.")

    json_logs: bool = Field(True, description="Structured JSON log lines (with request ids).")
    shutdown_grace_s: int = Field(30, ge=1, description="Seconds in-flight requests get on shutdown.")

    max_request_bytes: int = Field(2 * 1024 * 1024, gt=0, description="Request body limit (413 above it).")
    rate_limit_per_s: float = Field(0.0, ge=0, description="Per-client request rate on /v1 (0 = no limit).")
    rate_limit_burst: int = Field(20, ge=1, description="Burst size of the per-client rate limit.")
    max_inflight_completions: int = Field(64, ge=1, description="Completion rows (prompts x n, all requests) in "
                                          "flight before 503 + Retry-After; one request over it alone: 400.")
    # Bounds on the work of one request (issue 21): errors in OpenAI's shape, 400 over a bound, 503 over the load.
    max_prompts_per_request: int = Field(32, ge=1, description="Prompts in one /v1/completions request.")
    max_inflight_tokens: int = Field(65536, ge=1, description="Requested completion tokens (rows x max_tokens) in "
                                     "flight before 503 + Retry-After; one request over it alone: 400.")
    trust_proxy_headers: bool = Field(False, description="`code2lora serve`: take the client address from "
                                      "X-Forwarded-For/Forwarded (only from forwarded_allow_ips); off: never.")
    forwarded_allow_ips: str = Field("127.0.0.1", description="Proxies trusted when trust_proxy_headers is on.")
    cors_origins: list[str] = Field(default_factory=list, description="CORS allow-list; empty = CORS closed.")

    api_keys: list[str] = Field(default_factory=list, description="Bearer tokens for /v1; empty = open on loopback.")

    # Admin dashboard (/admin). Passwords may be given plain or as "sha256:<hex>".
    admin_user: str = Field("admin", description="Dashboard user with full rights.")
    admin_password: str | None = Field(None, description="Password of admin_user; unset = no admin login.")
    readonly_user: str = Field("viewer", description="Dashboard user who can look but not act.")
    readonly_password: str | None = Field(None, description="Password of readonly_user; unset = no read-only login.")
    session_secret: str | None = Field(None, description="Signs dashboard session cookies; default: random per process.")
    login_max_failures: int = Field(5, ge=1, description="Failed dashboard logins per client address and per user "
                                    "name within login_failure_window_s before 429 + Retry-After.")
    login_failure_window_s: float = Field(300.0, gt=0, description="Window of the login throttle.")
    api_key_max_failures: int = Field(20, ge=1, description="Wrong API keys per client address within "
                                      "api_key_failure_window_s before every key from it gets 429 + Retry-After.")
    api_key_failure_window_s: float = Field(60.0, gt=0, description="Window of the API key throttle.")

    @field_validator("vllm_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        if self.workspace_dir is None:
            self.workspace_dir = self.data_dir / "workspaces"
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'code2lora.db'}"
        return self

    def vllm_replicas(self) -> list[str]:
        """The vLLM replica URLs to serve from: `vllm_urls`, else the one `vllm_url`."""
        return list(dict.fromkeys(u.rstrip("/") for u in self.vllm_urls)) or [self.vllm_url.rstrip("/")]

    def ensure_dirs(self) -> None:
        """Create the data, artifact and workspace folders."""
        for d in (self.data_dir, self.artifact_dir, self.workspace_dir):
            d.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests build their own `Settings` and pass it to `create_app`)."""
    return Settings()
