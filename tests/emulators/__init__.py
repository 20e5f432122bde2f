"""Local HTTP emulators of the Anthropic Messages API and AWS Bedrock Runtime Converse, with fault injection.

The official SDKs are pointed at them, nothing of theirs is mocked::

    with AnthropicEmulator(api_key="test-key") as emu:          # or the `anthropic_emulator` fixture
        client = AsyncAnthropic(api_key="test-key", base_url=emu.base_url, max_retries=0)
        emu.inject(Fault.status(529, retry_after=1), times=2)  # the next 2 generation calls fail
        emu.inject(Fault.hang(), on="probe")                    # the next GET /v1/models hangs
        ...
        assert emu.model_calls == 3 and emu.requests[-1].json["model"] == "claude-sonnet-4-6"

    with BedrockEmulator(access_key_id="AKIDTEST") as emu:     # or the `bedrock_emulator` fixture
        client = boto3.client("bedrock-runtime", endpoint_url=emu.endpoint_url, aws_access_key_id="AKIDTEST", ...)

In async tests, wait with ``await emu.await_disconnect()`` / ``await emu.await_requests(n)``: the blocking
``wait_for_*`` stall the event loop, which an asyncio client may need to run to close its socket.

``base.py`` has the shared behaviour (faults, recording, lifecycle), ``answers.py`` what the emulated model
answers, and each emulator's docstring its provider's specifics.
"""

from .anthropic import AnthropicEmulator
from .base import Fault, RecordedRequest
from .bedrock import BedrockEmulator

__all__ = ["AnthropicEmulator", "BedrockEmulator", "Fault", "RecordedRequest"]
