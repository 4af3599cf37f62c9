"""Artefacts rendered from one fleet.yaml: Kubernetes manifests, the L7 tier's config, Prometheus scrape config and
alert rules, Grafana dashboards. Pure functions from :class:`~llmfleet.config.FleetConfig` to files; the CLI in
:mod:`llmfleet.render.cli` writes them."""
