"""Who may talk to the runtime: the Host, Origin and token rules of API.md "Conventions".

A configured token is required everywhere but the open routes; CORS and
WebSocket origins are checked against ``--allow-origin`` (same origin by
default); without a token, a ``Host`` that is not loopback or this machine is
refused (DNS rebinding). ``base.JsonErrorsMixin.check_security`` applies them.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import socket
import time
import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsruntime_ext.context import Context

log = logging.getLogger("wsruntime")


def _host_only(host_header: str) -> str:
    """``[::1]:3002`` → ``::1``, ``Example.COM:80`` → ``example.com``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


@functools.lru_cache(maxsize=256)  # asked on every request without a token; ipaddress parses slowly
def _is_loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin_host_port(origin: str) -> str | None:
    """``http://Example.com`` → ``example.com:80``; None when it is not an http(s) origin."""
    try:
        parts = urllib.parse.urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _request_host_port(host_header: str, scheme: str) -> str:
    host = _host_only(host_header)
    port_text = host_header.rsplit("]", 1)[-1] if host_header.startswith("[") else host_header
    port = port_text.rsplit(":", 1)[1] if ":" in port_text else ("443" if scheme == "https" else "80")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Security:
    """Host, origin and token rules, computed once from the Config and shared by every handler."""

    def __init__(self, ctx: Context) -> None:
        self.config = ctx.config
        self._token = ctx.config.token.encode() if ctx.config.token else None
        self._allowed_origins = set(ctx.config.allow_origins)
        self._known_hosts: set[str] = set()
        self._known_hosts_at = 0.0
        self._extra_hosts = {_host_only(ctx.config.host)}
        for origin in self._allowed_origins:
            host = urllib.parse.urlsplit(origin).hostname if origin != "*" else None
            if host:
                self._extra_hosts.add(host.lower())

    def token_ok(self, supplied: str | None) -> bool:
        if self._token is None:
            return True
        if not supplied:
            return False
        return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), self._token)

    def origin_ok(self, origin: str, host_header: str, scheme: str) -> bool:
        """Same origin (the Origin's host and port are the request's Host), or explicitly allowed."""
        normal = origin.strip().rstrip("/").lower()
        if normal in self._allowed_origins or self.config.allow_any_origin:
            return True
        origin_hp = _origin_host_port(normal)
        return origin_hp is not None and origin_hp == _request_host_port(host_header, scheme)

    def host_ok(self, host_header: str) -> bool:
        """DNS-rebinding guard, applied only when no token is configured."""
        if self._token is not None:
            return True
        host = _host_only(host_header)
        if _is_loopback_name(host) or host in self._extra_hosts:
            return True
        if self.config.host in ("0.0.0.0", "::", ""):
            # Bound to every interface: this machine's own names and addresses are its host too.
            return host in self._machine_hosts()
        return False

    def _machine_hosts(self) -> set[str]:
        now = time.monotonic()
        if now - self._known_hosts_at > 5.0:
            self._known_hosts_at = now
            hosts = {socket.gethostname().lower(), socket.getfqdn().lower()}
            try:
                import psutil

                for addrs in psutil.net_if_addrs().values():
                    hosts.update(
                        a.address.split("%", 1)[0].lower()
                        for a in addrs
                        if a.family in (socket.AF_INET, socket.AF_INET6)
                    )
            except Exception:  # psutil missing or the interfaces unreadable: names only
                log.debug("cannot list this machine's addresses", exc_info=True)
            self._known_hosts = hosts
        return self._known_hosts
