"""Gateway addresses: from the config's ``url`` to a gRPC channel target.

Accepted forms:

* ``host:port`` (``localhost:50051``, ``10.0.0.5:50051``, ``[::1]:50051``), passed through;
* a gRPC resolver URI: ``dns:///gateway.internal:50051`` (every resolved address is used,
  round_robin), ``ipv4:10.0.0.1:50051,10.0.0.2:50051``, ``ipv6:...``, ``unix:...``, passed through;
* for compatibility with the seed's HTTP gateway, ``http://host:port`` and ``grpc://host:port``
  (plaintext) or ``https://host:port`` and ``grpcs://host:port`` (TLS): the scheme is stripped;
  without a port, http uses 80, https and grpcs 443, grpc 50051.

A host without a port (``gateway``, ``10.0.0.5``, ``[::1]``, ``dns:///gateway``) gets the gateway's
port: 50051 for plaintext, 443 for TLS (gRPC itself would dial 443 whatever the transport).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

__all__ = ["DEFAULT_TARGET", "PLAINTEXT_PORT", "TLS_PORT", "check_key_transport", "is_loopback", "normalize_target"]

DEFAULT_TARGET = "localhost:50051"
PLAINTEXT_PORT = 50051
TLS_PORT = 443

_URL_SCHEMES: dict[str, tuple[bool, int]] = {
    "http": (False, 80),
    "grpc": (False, PLAINTEXT_PORT),
    "https": (True, TLS_PORT),
    "grpcs": (True, TLS_PORT),
}
_RESOLVER_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


def _with_port(hostport: str, port: int) -> str:
    """``hostport`` with ``:port`` appended when it has none (IPv6 literals bracketed)."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1 or hostport[close + 1 :].startswith(":"):
            return hostport  # has a port (or is malformed: gRPC reports it)
        return f"{hostport[: close + 1]}:{port}"
    colons = hostport.count(":")
    if colons == 1:
        return hostport
    if colons > 1:  # a bare IPv6 literal such as ::1
        return f"[{hostport}]:{port}"
    return f"{hostport}:{port}"


def _dns_with_port(text: str, port: int) -> str:
    """``dns:[//authority/]host[:port]`` with the default port added to the host when missing."""
    prefix, rest = text[:4], text[4:]
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        if slash == -1:
            return text  # no host name: gRPC reports it
        prefix, rest = prefix + rest[: slash + 1], rest[slash + 1 :]
    if not rest:
        return text
    return prefix + _with_port(rest, port)


def normalize_target(url: str, tls: bool | None = None) -> tuple[str, bool | None]:
    """``(target, tls)``: the gRPC target and whether the scheme asked for TLS (None: no scheme).

    ``tls`` is the caller's explicit TLS setting, if any: with the scheme's, it decides the port of
    an address that has none (443 with TLS, else 50051); it does not change the returned flag.
    Raises ValueError for an empty value, an unknown ``scheme://`` or a URL with a path.
    """
    text = url.strip()
    if not text:
        raise ValueError("the gateway address is empty")
    default_port = TLS_PORT if tls else PLAINTEXT_PORT
    lowered = text.lower()
    if lowered.startswith("dns:"):
        return _dns_with_port(text, default_port), None
    if lowered.startswith(_RESOLVER_SCHEMES):
        return text, None
    if "://" not in text:
        return _with_port(text, default_port), None
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in _URL_SCHEMES:
        raise ValueError(
            f"unsupported scheme {parts.scheme!r} in gateway address {url!r} "
            "(use host:port, dns:///host:port, http://, https://, grpc:// or grpcs://)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"a gRPC gateway address has no path or query: {url!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in gateway address {url!r}")
    scheme_tls, scheme_port = _URL_SCHEMES[scheme]
    try:
        port = parts.port or scheme_port
    except ValueError as exc:
        raise ValueError(f"invalid port in gateway address {url!r}") from exc
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}", scheme_tls


def _host_of(hostport: str) -> str:
    if hostport.startswith("["):
        return hostport[1 : hostport.find("]")] if "]" in hostport else hostport
    if hostport.count(":") == 1:
        return hostport.split(":", 1)[0]
    return hostport


def _is_loopback_host(host: str) -> bool:
    host = host.strip().lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(target: str) -> bool:
    """Whether a channel target (as ``normalize_target`` returns it) reaches only this machine:
    localhost, 127.0.0.0/8, ::1 or a unix socket."""
    lowered = target.lower()
    if lowered.startswith(("unix:", "unix-abstract:")):
        return True
    if lowered.startswith(("ipv4:", "ipv6:")):
        addresses = target.split(":", 1)[1].split(",")
        return all(_is_loopback_host(_host_of(a)) for a in addresses if a)
    if lowered.startswith("dns:"):
        rest = target[4:]
        if rest.startswith("//"):
            rest = rest[rest.find("/", 2) + 1 :] if rest.find("/", 2) != -1 else ""
        return bool(rest) and _is_loopback_host(_host_of(rest))
    if lowered.startswith(_RESOLVER_SCHEMES):
        return False
    return _is_loopback_host(_host_of(target))


def check_key_transport(target: str, tls: bool) -> None:
    """Refuse to send an API key in plaintext anywhere but to this machine (raises ValueError)."""
    if not tls and not is_loopback(target):
        raise ValueError(
            f"refusing to send the API key in plaintext to {target}: use TLS (https:// or grpcs://, "
            "tls: true) or a loopback address"
        )
