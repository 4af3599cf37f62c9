"""The Prometheus file_sd target file of a running `up`: the gateway, the control API and every ready replica.

`up` picks free ports, so a Prometheus cannot be told them in advance; it reads this file instead
(``file_sd_configs``, as the ``prometheus.yml`` of `llmfleet render prometheus` does for ``targets/*.json``). The
file is rewritten atomically (temporary file + rename, see :func:`~llmfleet.render.prometheus.write_file_sd`)
whenever a replica becomes ready or goes away, and emptied when `up` stops.
"""

from __future__ import annotations

from pathlib import Path

from llmfleet.fleet.supervisor import ManagedReplica
from llmfleet.render.alerts import JOB_CONTROL, JOB_ENGINE, JOB_GATEWAY
from llmfleet.render.prometheus import ScrapeTarget, file_sd_path, write_file_sd


class PrometheusTargets:
    """Supervisor listener keeping ``<run_dir>/prometheus/targets/llmfleet-up.json`` equal to the live endpoints.

    Engine targets carry ``replica`` (the replica's stable name), ``pool`` and ``capacity_type`` labels, and
    ``model`` in a multi-model fleet.
    """

    def __init__(self, run_dir: Path, gateway_url: str) -> None:
        self.path = file_sd_path(run_dir / "prometheus")
        self.gateway_url: str | None = gateway_url
        self.control_url: str | None = None
        self._replicas: dict[str, ManagedReplica] = {}

    def targets(self) -> list[ScrapeTarget]:
        """What the file lists now: the gateway, the control API (once known), the ready replicas by name."""
        out = [] if self.gateway_url is None else [ScrapeTarget(JOB_GATEWAY, self.gateway_url)]
        if self.control_url is not None:
            out.append(ScrapeTarget(JOB_CONTROL, self.control_url))
        for r in sorted(self._replicas.values(), key=lambda r: (r.name, r.port)):
            labels = {"replica": r.name or f"r{r.index}", "pool": r.pool, "capacity_type": r.capacity_type}
            if r.model:
                labels["model"] = r.model
            out.append(ScrapeTarget(JOB_ENGINE, r.url, labels))
        return out

    def write(self) -> Path:
        """Write the file now (atomically); returns its path."""
        write_file_sd(self.path, self.targets())
        return self.path

    def clear(self) -> None:
        """An empty list (the fleet stopped: nothing to scrape, no "target down" alert for a fleet that is gone)."""
        self._replicas.clear()
        self.gateway_url = self.control_url = None
        if self.path.exists():
            write_file_sd(self.path, [])

    def set_control_url(self, url: str) -> None:
        """Add the control API (it serves the autoscaler's metrics) once it listens."""
        self.control_url = url
        self.write()

    async def replica_ready(self, replica: ManagedReplica) -> None:
        self._replicas[replica.url] = replica
        self.write()

    async def replica_gone(self, replica: ManagedReplica) -> None:
        if self._replicas.get(replica.url) is replica:
            del self._replicas[replica.url]
            self.write()
