"""Typed configuration for every llmfleet component, in one place.

Each section is a pydantic model with defaults and help text. ``fleet.yaml`` maps onto :class:`FleetConfig`; CLI
options override fields. Validation errors are re-raised as :class:`~llmfleet.errors.ConfigError` whose message
names the offending key (``engine.max_num_seqs: Input should be greater than 0``).

One module per section family (``_base``, ``engine``, ``routing``, ``gateway``, ``autoscaling``, ``deploy``,
``validation``, ``fleet``); everything public is re-exported here, so ``from llmfleet.config import X`` is the
one way in."""

from __future__ import annotations

from llmfleet.config._base import _Section, format_validation_error, load_yaml, validate_section
from llmfleet.config.autoscaling import AutoscalePolicyName, AutoscalerConfig, KubernetesProviderConfig
from llmfleet.config.deploy import (
    AutoscalingDeployConfig,
    CapacityType,
    DeployConfig,
    DeployImagesConfig,
    DeployPoolConfig,
    GatewayDeployConfig,
    L7Config,
    ModelCacheConfig,
    MonitoringDeployConfig,
    TolerationConfig,
)
from llmfleet.config.engine import FaultConfig, SimEngineConfig, VLLMEngineConfig, VLLMProfileName
from llmfleet.config.fleet import (
    FleetConfig,
    FleetSection,
    ModelConfig,
    ModelSettings,
    dotted_to_nested,
    load_fleet_config,
    merge_overrides,
    model_settings,
    parse_fleet_config,
)
from llmfleet.config.gateway import (
    GatewayAuthConfig,
    GatewayCacheConfig,
    GatewayConfig,
    GatewayDiscoveryConfig,
    GatewayReplicaConfig,
    HealthConfig,
)
from llmfleet.config.routing import (
    CostAwareConfig,
    InnerPolicyName,
    LatencyEwmaConfig,
    PoolRule,
    PrefixAffinityConfig,
    RoutingConfig,
    RoutingPolicyName,
    ScorerWeightsConfig,
    SessionAffinityConfig,
    TieredConfig,
)
from llmfleet.config.validation import (
    VALIDATE_CHECKS,
    ValidateCheckName,
    ValidateConfig,
    ValidateCostConfig,
    ValidateErrorRecoveryConfig,
    ValidateFailoverConfig,
    ValidateLatencyConfig,
    ValidateMemoryConfig,
    ValidateScalingConfig,
    ValidateThroughputConfig,
)

__all__ = [
    "VALIDATE_CHECKS",
    "AutoscalePolicyName",
    "AutoscalerConfig",
    "AutoscalingDeployConfig",
    "CapacityType",
    "CostAwareConfig",
    "DeployConfig",
    "DeployImagesConfig",
    "DeployPoolConfig",
    "FaultConfig",
    "FleetConfig",
    "FleetSection",
    "GatewayAuthConfig",
    "GatewayCacheConfig",
    "GatewayConfig",
    "GatewayDeployConfig",
    "GatewayDiscoveryConfig",
    "GatewayReplicaConfig",
    "HealthConfig",
    "InnerPolicyName",
    "KubernetesProviderConfig",
    "L7Config",
    "LatencyEwmaConfig",
    "ModelCacheConfig",
    "ModelConfig",
    "ModelSettings",
    "MonitoringDeployConfig",
    "PoolRule",
    "PrefixAffinityConfig",
    "RoutingConfig",
    "RoutingPolicyName",
    "ScorerWeightsConfig",
    "SessionAffinityConfig",
    "SimEngineConfig",
    "TieredConfig",
    "TolerationConfig",
    "VLLMEngineConfig",
    "VLLMProfileName",
    "ValidateCheckName",
    "ValidateConfig",
    "ValidateCostConfig",
    "ValidateErrorRecoveryConfig",
    "ValidateFailoverConfig",
    "ValidateLatencyConfig",
    "ValidateMemoryConfig",
    "ValidateScalingConfig",
    "ValidateThroughputConfig",
    "_Section",
    "dotted_to_nested",
    "format_validation_error",
    "load_fleet_config",
    "load_yaml",
    "merge_overrides",
    "model_settings",
    "parse_fleet_config",
    "validate_section",
]
