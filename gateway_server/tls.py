"""Server TLS and mTLS: credentials whose certificate files are re-read on SIGHUP, and the caller's
identity from its client certificate.

The credentials are gRPC's dynamic SSL server credentials: gRPC asks :meth:`ServerTls._fetch` for a
new certificate configuration at every new TLS handshake. :meth:`ServerTls.reload` reads and checks
the files (a certificate and key that do not match, or an unreadable file, keep the old ones and say
so in the log); the next handshake uses them. Connections already open keep theirs, so no call is
dropped by a reload.
"""

from __future__ import annotations

import contextvars
import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any, cast

import grpc

from gateway_server.settings import TlsConfig

log = logging.getLogger("gateway_server.tls")

# The verified client certificate's subject of the call being served (mTLS), e.g.
# "CN=orchestrator-1,O=Example": set per call by the server's interceptor, None without mTLS.
CALLER_IDENTITY: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller_identity", default=None)


def caller_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The subject of the client certificate the peer presented and gRPC verified, else None.

    ``x509_subject`` (RFC 2253, e.g. ``CN=orchestrator-1,O=Example``) when gRPC reports it, else
    ``CN=<common name>``. Usable as a caller identity (logs, per-caller limits): with a client CA
    configured no call gets here without a certificate that CA signed.
    """
    try:
        auth = context.auth_context()
    except Exception:  # not every context type (tests, in-process fakes) has one
        return None
    subject = auth.get("x509_subject")
    if subject:
        return bytes(next(iter(subject))).decode("utf-8", "replace")
    common_name = auth.get("x509_common_name")
    if common_name:
        return "CN=" + bytes(next(iter(common_name))).decode("utf-8", "replace")
    return None


def check_pair(cfg: TlsConfig) -> None:
    """Raise ValueError (one line, the file named) unless the files form a usable server identity."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"server.tls: {cfg.cert_file} and {cfg.key_file} are not a usable certificate and "
                         f"key: {getattr(exc, 'strerror', None) or exc}") from None
    if cfg.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(cfg.client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"server.tls.client_ca_file: {cfg.client_ca_file} is not a PEM CA bundle: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None


class ServerTls:
    """The gateway's TLS credentials (``server.tls``); :meth:`reload` on SIGHUP."""

    def __init__(self, cfg: TlsConfig) -> None:
        self.cfg = cfg
        self.mutual = cfg.client_ca_file is not None
        self._lock = threading.Lock()  # _fetch runs on a gRPC core thread
        self._next: grpc.ServerCertificateConfiguration | None = None
        self.reloads = 0
        check_pair(cfg)
        self._initial = self._read()

    def _read(self) -> grpc.ServerCertificateConfiguration:
        cfg = self.cfg
        client_ca = cfg.client_ca_file.read_bytes() if cfg.client_ca_file is not None else None
        return grpc.ssl_server_certificate_configuration(
            [(cfg.key_file.read_bytes(), cfg.cert_file.read_bytes())], root_certificates=client_ca)

    def credentials(self) -> grpc.ServerCredentials:
        # gRPC's fetcher may return None ("no change"); the stubs say otherwise.
        fetch = cast("Callable[[], grpc.ServerCertificateConfiguration]", self._fetch)
        return grpc.dynamic_ssl_server_credentials(self._initial, fetch, require_client_authentication=self.mutual)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            config, self._next = self._next, None
        return config

    def reload(self) -> bool:
        """Re-read the files; True when the next handshakes use them, False (logged) when they are unusable."""
        try:
            check_pair(self.cfg)
            config = self._read()
        except (ValueError, OSError) as exc:
            log.error("TLS reload failed, keeping the current certificate: %s", exc)
            return False
        with self._lock:
            self._next = config
        self.reloads += 1
        log.info("TLS certificate files re-read (%s); new connections use them", self.cfg.cert_file)
        return True
