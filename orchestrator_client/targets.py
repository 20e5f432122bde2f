"""Gateway addresses: from the config's ``url`` to a gRPC channel target.

Accepted forms:

* ``host:port`` (``localhost:50051``, ``10.0.0.5:50051``, ``[::1]:50051``), passed through;
* a gRPC resolver URI: ``dns:///gateway.internal:50051`` (every resolved address is used,
  round_robin), ``ipv4:10.0.0.1:50051,10.0.0.2:50051``, ``ipv6:...``, ``unix:...``, passed through;
* for compatibility with the seed's HTTP gateway, ``http://host:port`` and ``grpc://host:port``
  (plaintext) or ``https://host:port`` and ``grpcs://host:port`` (TLS): the scheme is stripped;
  without a port, http uses 80, https and grpcs 443, grpc 50051.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["DEFAULT_TARGET", "normalize_target"]

DEFAULT_TARGET = "localhost:50051"

_URL_SCHEMES: dict[str, tuple[bool, int]] = {
    "http": (False, 80),
    "grpc": (False, 50051),
    "https": (True, 443),
    "grpcs": (True, 443),
}
_RESOLVER_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")


def normalize_target(url: str) -> tuple[str, bool | None]:
    """``(target, tls)``: the gRPC target and whether the scheme asked for TLS (None: no scheme).

    Raises ValueError for an empty value, an unknown ``scheme://`` or a URL with a path.
    """
    text = url.strip()
    if not text:
        raise ValueError("the gateway address is empty")
    lowered = text.lower()
    if lowered.startswith(_RESOLVER_SCHEMES):
        return text, None
    if "://" not in text:
        return text, None
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
    tls, default_port = _URL_SCHEMES[scheme]
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ValueError(f"invalid port in gateway address {url!r}") from exc
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{host}:{port}", tls
