"""The ``gateway`` section: listening, limits, timeouts, health, replicas, discovery, keys, cache."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from llmfleet.config._base import _Section


class HealthConfig(_Section):
    """Active probes and passive outlier ejection (section ``gateway.health``)."""

    probe_interval_s: float = Field(10.0, gt=0, description="Seconds between active probes of each replica.")
    probe_timeout_s: float = Field(5.0, gt=0, description="A probe slower than this counts as failed.")
    probe_completion: bool = Field(
        True, description="Probe with a 1-token completion (measures real latency), not only GET /health."
    )
    healthy_latency_s: float = Field(0.5, gt=0, description="Probe latency at or under this is healthy.")
    degraded_latency_s: float = Field(1.0, gt=0, description="Probe latency over this marks the replica degraded.")
    degraded_peer_factor: float = Field(
        2.0,
        ge=1.0,
        description="... but only when it is also this many times slower than the median of its peers' latest "
        "probes: a fleet-wide slowdown (load) degrades nobody. 1 disables the peer comparison.",
    )
    failures_to_eject: int = Field(1, ge=1, description="Consecutive failed probes that mark a replica unhealthy.")
    successes_to_readmit: int = Field(2, ge=1, description="Consecutive good probes that re-admit a replica.")
    request_failures_to_eject: int = Field(3, ge=1, description="Consecutive failed requests that eject a replica.")
    error_rate_window: int = Field(20, ge=2, description="Recent requests over which the error rate is computed.")
    error_rate_to_eject: float = Field(0.5, gt=0, le=1, description="Error rate over the window that ejects.")
    ejection_backoff_s: float = Field(5.0, gt=0, description="First ejection lasts at least this long ...")
    ejection_backoff_max_s: float = Field(120.0, gt=0, description="... doubling per repeat, up to this.")
    scrape_interval_s: float = Field(2.0, gt=0, description="Seconds between scrapes of each replica's /metrics.")


class GatewayReplicaConfig(_Section):
    """A replica given in fleet.yaml."""

    url: str = Field(pattern=r"^https?://", description="Base URL, e.g. http://127.0.0.1:8001.")
    pool: str = Field("default", min_length=1, description="Pool name (tiered routing, spot/reserved).")
    weight: float = Field(1.0, gt=0, description="Relative capacity.")
    name: str | None = Field(None, description="Name in metrics and status (default: replica-<n>).")
    gpu: str | None = Field(None, description="GPU catalog name, for the cost metrics (unset: not billed).")
    gpus: int = Field(1, ge=1, description="GPUs per replica (tensor parallel size), for the cost metrics.")
    capacity_type: Literal["on-demand", "spot", "reserved"] = Field(
        "on-demand", description="Which catalog price applies to this replica."
    )


class GatewayDiscoveryConfig(_Section):
    """A Kubernetes Service whose EndpointSlices the gateway follows (``gateway.discovery[]``).

    Written as a mapping or as the shorthand ``k8s:NAMESPACE/SERVICE`` (the form ``--discover`` takes). The API
    server is found like kubectl finds it (in-cluster service account, else KUBECONFIG / ~/.kube/config) unless
    the ``kubernetes`` section sets ``api_url``, ``kubeconfig`` or ``context``.
    """

    kind: Literal["k8s"] = Field("k8s", description="k8s: the ready endpoints of a Kubernetes Service.")
    namespace: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Namespace of the Service.")
    service: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Service name.")
    pool: str | None = Field(
        None, min_length=1, description="Pool of its replicas (default: slice label llmfleet.io/pool, else default)."
    )
    port_name: str | None = Field(None, description="EndpointSlice port to use (default: the first port).")
    weight: float = Field(1.0, gt=0, description="Relative capacity of each replica.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        kind, sep, rest = data.partition(":")
        namespace, slash, service = rest.partition("/")
        if not sep or kind != "k8s" or not slash or not namespace or not service or "/" in service:
            raise ValueError(f"expected k8s:NAMESPACE/SERVICE, got {data!r}")
        return {"kind": kind, "namespace": namespace, "service": service}

    @property
    def target(self) -> str:
        """The shorthand form, ``k8s:NAMESPACE/SERVICE``."""
        return f"{self.kind}:{self.namespace}/{self.service}"


class GatewayAuthConfig(_Section):
    """API keys on the OpenAI routes (section ``gateway.auth``; keys are managed with ``llmfleet keys``)."""

    keys_file: str | None = Field(
        None, description="Keys file written by `llmfleet keys add`; when set, every OpenAI route needs a key."
    )
    reload_interval_s: float = Field(1.0, gt=0, description="How often the keys file's mtime is checked.")
    assumed_max_tokens: int = Field(
        256, ge=1, description="Tokens reserved against tpm for a request that sets no max_tokens."
    )


class GatewayCacheConfig(_Section):
    """Response cache for deterministic requests (section ``gateway.cache``; the shorthand ``cache: memory`` works)."""

    backend: Literal["off", "memory", "redis"] = Field(
        "off", description="off, memory (per gateway) or redis (shared by gateways; needs gateway.redis_url)."
    )
    ttl_s: float = Field(300.0, gt=0, description="An entry is served for this long after it was stored.")
    max_entries: int = Field(4096, ge=1, description="memory: bounded LRU of this many responses ...")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="memory: ... and of this many bytes in all.")
    max_entry_bytes: int = Field(1024 * 1024, ge=256, description="Larger responses are not cached.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"backend": data} if isinstance(data, str) else data


class GatewayConfig(_Section):
    """The OpenAI-compatible gateway (section ``gateway``)."""

    host: str = Field("127.0.0.1", description="Address to bind.")
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    replicas: list[GatewayReplicaConfig] = Field(default_factory=list, description="Initial replicas.")
    discovery: list[GatewayDiscoveryConfig] = Field(
        default_factory=list, description="Services whose ready endpoints join as replicas (k8s:NAMESPACE/SERVICE)."
    )
    admin_token: str | None = Field(None, description="Bearer token for /admin; admin is disabled without one.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    connect_timeout_s: float = Field(2.0, gt=0, description="Upstream TCP connect timeout.")
    first_byte_timeout_s: float = Field(60.0, gt=0, description="Upstream time to response headers/first chunk.")
    idle_stream_timeout_s: float = Field(
        30.0, gt=0, description="Longest silence between upstream chunks (streams, and non-streamed bodies)."
    )
    request_timeout_s: float = Field(
        600.0, gt=0, description="Whole non-streamed request, all attempts together (first byte included)."
    )
    body_read_timeout_s: float = Field(30.0, gt=0, description="Longest time to receive a client's request body.")
    max_json_depth: int = Field(32, ge=2, description="Deepest nesting accepted in a request body.")
    max_json_keys: int = Field(4096, ge=16, description="Most keys (all objects together) in a request body.")
    max_prompt_tokens: int = Field(131_072, ge=1, description="Longest token-id (or list) prompt.")
    max_prompt_chars: int = Field(1_000_000, ge=1, description="Longest prompt text (all chat messages together).")
    vocab_sizes: dict[str, int] = Field(
        default_factory=dict, description="Vocabulary size per model: token-id prompts must lie in [0, size)."
    )
    max_in_flight_per_replica: int = Field(
        256, ge=1, description="Admission: outstanding requests per routable replica before new ones get 429."
    )
    overload_retry_after_s: float = Field(1.0, gt=0, description="Retry-After on 429/503 from admission.")
    overload_fraction: float = Field(
        0.8, gt=0, le=1, description="Above this share of admission capacity, upstream timeouts are not retried."
    )
    retry_budget_ratio: float = Field(0.2, ge=0, description="Retries may be this share of recent requests ...")
    retry_budget_min: int = Field(10, ge=0, description="... plus this many, per retry_budget_window_s.")
    retry_budget_window_s: float = Field(10.0, gt=0, description="Window of the retry budget.")
    error_log_interval_s: float = Field(10.0, ge=0, description="At most one log record per kind of error this often.")
    max_attempts: int = Field(3, ge=1, description="Upstream attempts per request (first try + retries).")
    retry_backoff_s: float = Field(0.02, ge=0, description="Base retry delay (jittered, doubling).")
    max_resumes: int = Field(2, ge=0, description="Times one stream may be resumed on another replica.")
    resume_token_ids: bool = Field(
        True,
        description="Ask engines for every stream's token ids (vLLM return_token_ids), so a resumed completion"
        " continues from exactly the tokens generated; false resumes from text (token counts stay exact from"
        " per-chunk usage) and spares the engine sending the prompt's ids in each stream's first chunk.",
    )
    stream_accounting: Literal["exact", "lean"] = Field(
        "exact",
        description="How the relay accounts a stream's tokens. exact: asks engines for per-chunk usage (and the"
        " token ids, see resume_token_ids), parses every chunk and strips what the client did not ask for. lean:"
        " asks only for the final usage (besides what the client asked), forwards every chunk's JSON untouched after"
        " a bytes check, and parses the kept chunks only when a stream must be resumed (then counted by the engine's"
        " /tokenize of the text sent, exact wherever that text re-tokenizes to itself): no parse or re-encode"
        " per chunk.",
    )
    drain_grace_s: float = Field(30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish.")
    ewma_alpha: float = Field(0.2, gt=0, le=1, description="Smoothing of per-replica latency averages.")
    health: HealthConfig = Field(default_factory=HealthConfig)
    auth: GatewayAuthConfig = Field(default_factory=GatewayAuthConfig)
    cache: GatewayCacheConfig = Field(default_factory=GatewayCacheConfig)
    redis_url: str | None = Field(
        None,
        pattern=r"^(redis|rediss|unix)://",
        description="redis://HOST:PORT/DB shared by several gateways: limits, cache, prefix affinity.",
    )
    redis_timeout_s: float = Field(0.25, gt=0, description="Redis connect/call timeout; slower means unavailable.")
    redis_retry_interval_s: float = Field(2.0, gt=0, description="After a Redis failure, local state this long.")
    redis_key_prefix: str = Field("llmfleet:", description="Prefix of every Redis key (several fleets, one Redis).")

    @model_validator(mode="after")
    def _cache_needs_redis(self) -> GatewayConfig:
        if self.cache.backend == "redis" and not self.redis_url:
            raise ValueError("cache.backend redis needs gateway.redis_url (--redis-url)")
        return self
