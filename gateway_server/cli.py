"""``model-gateway`` / ``python -m gateway_server [--config PATH]``: start the gateway.

Exit status: 0 after a clean drain (SIGTERM/SIGINT), 2 for a bad configuration (one line on
stderr naming the field), 1 when the server cannot start (e.g. the port is taken), or, with
``--workers`` > 1, when workers keep dying (see gateway_server.workers).

SIGHUP re-reads the TLS certificate files (``server.tls``) without dropping a call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from gateway_server.app import GatewayApp
from gateway_server.logging_setup import configure_logging, stop_logging
from gateway_server.settings import ConfigError, GatewaySettings, load_settings
from gateway_server.tls import check_pair

log = logging.getLogger("gateway_server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="model-gateway", description="Model Gateway gRPC server.")
    parser.add_argument("--config", help="YAML config file (default: $GATEWAY_CONFIG or config/gateway.yaml)")
    parser.add_argument("--port", type=int, help="override the port (GATEWAY_PORT)")
    parser.add_argument("--workers", help="server processes on the port: N or 'auto' (GATEWAY_WORKERS, default 1)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    return parser.parse_args(argv)


async def serve(settings: GatewaySettings, *, reuse_port: bool = False, worker_id: int = 0) -> None:
    app = GatewayApp(settings, reuse_port=reuse_port, worker_id=worker_id)
    loop = asyncio.get_running_loop()
    # Before start(): a SIGHUP right after the "started" line must not end the process.
    loop.add_signal_handler(signal.SIGHUP, app.reload_tls)
    await app.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(app.wait_for_termination())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("Shutting down: draining in-flight calls (grace %.1fs)", settings.server.grace_period)
    await app.stop()
    waiter.cancel()
    stopper.cancel()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides: dict[str, object] = {"port": args.port} if args.port is not None else {}
        if args.workers is not None:
            overrides["workers"] = args.workers
        settings = load_settings(args.config, **overrides)
    except ConfigError as exc:
        print(f"model-gateway: {exc}", file=sys.stderr)
        return 2
    if settings.server.tls is not None:
        try:
            check_pair(settings.server.tls)
        except ValueError as exc:
            print(f"model-gateway: {exc}", file=sys.stderr)
            return 2
    if args.check_config:
        print(f"model-gateway: configuration OK ({len(settings.providers)} providers)")
        return 0
    configure_logging(settings.log_level, settings.log_format)
    if settings.worker_count > 1:
        from gateway_server.workers import supervise  # the supervisor creates no gRPC object

        return supervise(settings)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        log.error("Cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def run() -> None:
    """Console-script entry point. After the drain the process ends at once: a blocking provider
    call still stuck in a worker thread (boto3, until its read timeout) must not hold the exit
    past the grace period."""
    code = main()
    stop_logging()  # the queued log lines, written before the exit below skips atexit
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
