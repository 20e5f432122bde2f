"""``python -m tests.emulators``: both provider emulators as one foreground process, for trying the
gateway by hand (config/emulators.gateway.yaml points the gateway at them). Loopback only.

    .venv/bin/python -m tests.emulators            # Anthropic on 127.0.0.1:8089, Bedrock on :8090
"""

from __future__ import annotations

import argparse
import signal
import threading

from .anthropic import AnthropicEmulator
from .bedrock import BedrockEmulator


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators", description=__doc__.split("\n\n")[0])
    parser.add_argument("--anthropic-port", type=int, default=8089)
    parser.add_argument("--bedrock-port", type=int, default=8090)
    parser.add_argument("--api-key", default="test-key", help="the Anthropic API key the emulator accepts")
    parser.add_argument("--access-key-id", default="AKIDTEST", help="the AWS access key id Bedrock accepts")
    args = parser.parse_args()
    anthropic = AnthropicEmulator(api_key=args.api_key)
    bedrock = BedrockEmulator(access_key_id=args.access_key_id)
    anthropic.requested_port, bedrock.requested_port = args.anthropic_port, args.bedrock_port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with anthropic, bedrock:
        print(f"Anthropic emulator on {anthropic.base_url} (API key {args.api_key!r})", flush=True)
        print(f"Bedrock emulator on {bedrock.endpoint_url} (access key id {args.access_key_id!r})", flush=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
