"""The Kubernetes provider: scale a Deployment through its scale subresource, discover replicas from EndpointSlices.

Uses the official ``kubernetes`` client (optional extra ``llmfleet[k8s]``); its calls are synchronous, so they run
in a worker thread. Discovery lists ``discovery.k8s.io/v1`` EndpointSlices labelled
``kubernetes.io/service-name=<service>`` and can follow them with a watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from llmfleet.config import KubernetesProviderConfig
from llmfleet.providers.base import ReplicaInfo

log = logging.getLogger(__name__)


class KubernetesProvider:
    """Provider over a Kubernetes API server (``api_client`` is a ``kubernetes.client.ApiClient``)."""

    def __init__(self, cfg: KubernetesProviderConfig, api_client: Any) -> None:
        from kubernetes import client

        self.cfg = cfg
        self._apps = client.AppsV1Api(api_client)
        self._discovery = client.DiscoveryV1Api(api_client)
        self._selector = f"kubernetes.io/service-name={cfg.service}"

    async def current_replicas(self) -> int:
        scale = await asyncio.to_thread(
            self._apps.read_namespaced_deployment_scale, self.cfg.deployment, self.cfg.namespace
        )
        return int(scale.spec.replicas or 0) if scale.spec is not None else 0

    async def scale_to(self, replicas: int, reason: str) -> None:
        log.info("scaling deployment %s/%s to %d: %s", self.cfg.namespace, self.cfg.deployment, replicas, reason)
        await asyncio.to_thread(
            self._apps.patch_namespaced_deployment_scale,
            self.cfg.deployment,
            self.cfg.namespace,
            {"spec": {"replicas": replicas}},
        )

    async def list_replicas(self) -> list[ReplicaInfo]:
        slices = await asyncio.to_thread(
            self._discovery.list_namespaced_endpoint_slice, self.cfg.namespace, label_selector=self._selector
        )
        return self._replicas(slices.items)

    def _replicas(self, slices: list[Any]) -> list[ReplicaInfo]:
        out: list[ReplicaInfo] = []
        for s in slices:
            ports = s.ports or []
            port = next((p.port for p in ports if self.cfg.port_name in (None, p.name)), None)
            if port is None:
                continue
            for ep in s.endpoints or []:
                ready = bool(ep.conditions and ep.conditions.ready)
                for addr in ep.addresses or []:
                    url = f"{self.cfg.scheme}://{addr}:{port}"
                    out.append(
                        ReplicaInfo(
                            id=url,
                            url=url,
                            ready=ready,
                            pool=(s.metadata.labels or {}).get("llmfleet.io/pool", "default"),
                        )
                    )
        return out

    async def watch_replicas(
        self,
        on_change: Callable[[list[ReplicaInfo]], None],
        max_events: int | None = None,
    ) -> None:
        """Follow EndpointSlice events, calling ``on_change`` with the full replica list after each one."""
        from kubernetes import watch

        def run() -> None:
            current: dict[str, Any] = {}
            w = watch.Watch()  # type: ignore[no-untyped-call]
            events = w.stream(  # type: ignore[no-untyped-call]
                self._discovery.list_namespaced_endpoint_slice,
                self.cfg.namespace,
                label_selector=self._selector,
                timeout_seconds=self.cfg.watch_timeout_s,
            )
            for n, event in enumerate(events, start=1):
                obj = event["object"]
                if event["type"] == "DELETED":
                    current.pop(obj.metadata.name, None)
                else:
                    current[obj.metadata.name] = obj
                on_change(self._replicas(list(current.values())))
                if max_events is not None and n >= max_events:
                    w.stop()  # type: ignore[no-untyped-call]

        await asyncio.to_thread(run)
