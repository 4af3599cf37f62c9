"""The ``routing`` section: the policy and each policy's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmfleet.config._base import _Section

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
    conversation_spill_margin: float = Field(
        16.0,
        ge=0.0,
        description="spill_margin for a prompt that extends a whole earlier prompt (a conversation's next turn): "
        "leaving costs its entire history, and only its own conversation follows it.",
    )
    conversation_spill_factor: float = Field(
        2.0, ge=1.0, description="spill_factor for a prompt that extends a whole earlier prompt."
    )
    engine_load_max_age_s: float = Field(
        5.0, gt=0.0, description="Count the engine's scraped running + waiting only while the scrape is this fresh."
    )
    forget_after_s: float = Field(30.0, gt=0.0, description="Forget a replica absent from the candidates this long.")
    miss_placement: Literal["auto", "least_loaded", "hashed"] = Field(
        "auto",
        description="Where a prompt with nothing remembered goes: least_loaded (ties to the replica given the fewest "
        "new prefixes), or hashed (the first replica within the load bound in a rendezvous-hash order of the "
        "prompt's first block, which every gateway process computes alike without sharing anything). auto: hashed "
        "when the gateway runs as several workers that share no prefix table (--workers N > 1 without "
        "gateway.redis_url), least_loaded otherwise.",
    )


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


class KvEventsConfig(_Section):
    """The engines' KV-cache events as an exact source of which replica holds which prompt blocks (vLLM
    ``--kv-events-config``, ZMQ; see docs/routing.md). Off by default; needs ``pip install 'llmfleet[kvevents]'``."""

    enabled: bool = Field(False, description="Subscribe to each replica's events and tokenize prompts to route.")
    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="Replica URL -> its ZMQ PUB endpoint (tcp://host:port, vLLM's kv-events 'endpoint').",
    )
    port_offset: int | None = Field(
        None,
        ge=-65535,
        le=65535,
        description="For replicas not in endpoints: tcp://<replica host>:<replica port + this>.",
    )
    replay_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description="Replica URL -> its ZMQ replay (ROUTER) endpoint, to fetch missed events after a gap.",
    )
    replay_port_offset: int | None = Field(
        None, ge=-65535, le=65535, description="For replicas not in replay_endpoints: replica port + this."
    )
    topic: str = Field("kv", description="The events' topic (vLLM's kv-events 'topic').")
    tokenizer: str | None = Field(
        None,
        min_length=1,
        description="The model directory vLLM serves (tokenizer.json, tokenizer_config.json, chat template): the "
        "gateway tokenizes prompts itself, as vLLM does, instead of asking a replica's /tokenize (what it cannot "
        "reproduce still goes to /tokenize). None: /tokenize for every request.",
    )
    tokenize_timeout_s: float = Field(
        0.05,
        gt=0.0,
        description="Per request, the replica's /tokenize must answer within this, else the text table (every request "
        "waits for it: a routing hint is not worth more than a short prefill).",
    )
    replay_timeout_s: float = Field(2.0, gt=0.0, description="Give up a replay after this (then clear and go on).")
    max_blocks_per_replica: int = Field(
        65536, ge=1, description="Blocks remembered per replica (set above the engine's number of KV blocks)."
    )
    max_prompt_blocks: int = Field(1024, ge=1, description="Only a prompt's first this-many blocks are looked up.")

    @model_validator(mode="after")
    def _consistent(self) -> KvEventsConfig:
        for key, table in (("endpoints", self.endpoints), ("replay_endpoints", self.replay_endpoints)):
            for url, endpoint in table.items():
                if not endpoint.startswith(("tcp://", "ipc://")):
                    raise ValueError(f"{key}[{url}]: {endpoint!r} must start with tcp:// or ipc://")
        if self.enabled and not self.endpoints and self.port_offset is None:
            raise ValueError("enabled needs endpoints or port_offset (where each replica publishes its events)")
        return self


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
    kv_events: KvEventsConfig = Field(default_factory=KvEventsConfig)
