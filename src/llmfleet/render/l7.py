"""The L7 tier in front of two or more gateways: nginx and HAProxy configurations (``deploy.l7``).

Both balance on the fewest open connections (a streamed completion holds its connection for its whole length, so
connections are the right proxy for load), take a gateway out after failed attempts (passive health; HAProxy also
probes ``/health``), stream responses without buffering (Server-Sent Events reach clients token by token), allow
long silences inside a stream, and refuse oversized bodies before they reach a gateway. Retries to another gateway
happen only where the request was not yet sent (connect errors): a completion is never run twice.

The nginx file is a whole ``nginx.conf`` (``nginx -c FILE``) without ``pid``/``user``, which differ per install and
can be given with ``-g``; the HAProxy file is a whole ``haproxy.cfg``.
"""

from __future__ import annotations

from llmfleet.config import FleetConfig, L7Config
from llmfleet.errors import ConfigError
from llmfleet.render.yamlout import HEADER

UPSTREAM = "llmfleet_gateways"


def _gateways(l7: L7Config) -> list[str]:
    if not l7.gateways:
        raise ConfigError("deploy.l7.gateways: required to render the L7 tier (the gateways' host:port, two or more)")
    return list(l7.gateways)


def _body_limit(cfg: FleetConfig) -> int:
    return cfg.deploy.l7.max_body_bytes or cfg.gateway.max_body_bytes


def render_nginx(cfg: FleetConfig) -> str:
    """A complete nginx.conf for the L7 tier."""
    l7 = cfg.deploy.l7
    gateways = _gateways(l7)
    servers = "\n".join(
        f"        server {g} max_fails={l7.max_fails} fail_timeout={l7.fail_timeout_s}s;" for g in gateways
    )
    keepalive = f"        keepalive {l7.keepalive};\n" if l7.keepalive else ""
    stream = f"{l7.stream_timeout_s}s"
    return f"""{HEADER}
worker_processes auto;
error_log stderr warn;

events {{
    worker_connections {l7.max_connections};
}}

http {{
    log_format llmfleet '$remote_addr "$request" $status $body_bytes_sent rt=$request_time '
                        'upstream=$upstream_addr ut=$upstream_response_time';
    access_log /dev/stdout llmfleet;
    server_tokens off;
    gzip off;

    upstream {UPSTREAM} {{
        least_conn;
{servers}
{keepalive}    }}

    server {{
        listen {l7.listen_host}:{l7.listen_port};
        client_max_body_size {_body_limit(cfg)};

        location = /l7-health {{
            access_log off;
            return 200 "ok\\n";
        }}

        location / {{
            proxy_pass http://{UPSTREAM};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-Id $request_id;

            # Server-Sent Events: pass every chunk on as it arrives, both ways.
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;

            proxy_connect_timeout {l7.connect_timeout_s:g}s;
            proxy_read_timeout {stream};
            proxy_send_timeout {stream};
            send_timeout {stream};

            # Passive health: these count as a failed attempt (max_fails); POSTs are retried only if not yet sent.
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries {len(gateways)};
        }}
    }}
}}
"""


def _haproxy_server(i: int, address: str) -> str:
    return f"    server gw{i + 1} {address}"


def render_haproxy(cfg: FleetConfig) -> str:
    """A complete haproxy.cfg for the L7 tier."""
    l7 = cfg.deploy.l7
    gateways = _gateways(l7)
    servers = "\n".join(_haproxy_server(i, g) for i, g in enumerate(gateways))
    stream = f"{l7.stream_timeout_s}s"
    checks = (
        f"check inter {l7.fail_timeout_s}s fall {l7.max_fails} rise 2 "
        f"observe layer7 error-limit {l7.max_fails} on-error mark-down"
    )
    return f"""{HEADER}
global
    maxconn {l7.max_connections}
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect {l7.connect_timeout_s:g}s
    timeout http-request 30s
    timeout queue 30s
    timeout client {stream}
    timeout server {stream}
    retries {max(1, len(gateways) - 1)}
    option redispatch 1

frontend llmfleet
    bind {l7.listen_host}:{l7.listen_port}
    monitor-uri /l7-health
    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {_body_limit(cfg)} }}
    default_backend {UPSTREAM}

backend {UPSTREAM}
    balance leastconn
    option httpchk
    http-check send meth GET uri /health
    # Active checks every fail_timeout_s, plus passive: {l7.max_fails} errors in live traffic mark a gateway down.
    default-server {checks}
{servers}
"""
