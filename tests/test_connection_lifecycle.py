"""Connection lifecycle (server.max_connection_age, keepalive): the server ends old connections with
GOAWAY so that clients reconnect (and rebalance); calls on a fresh connection go on working."""

from __future__ import annotations

import asyncio

import grpc

from gateway_server.app import server_connection_options
from gateway_server.settings import settings_from_mapping
from modelgateway.v1 import model_gateway_pb2 as pb
from modelgateway.v1 import model_gateway_pb2_grpc as pb_grpc

from .conftest import GatewayFactory, mock_config


def test_the_options_come_from_the_settings() -> None:
    settings = settings_from_mapping(mock_config(server={
        "max_connection_age": 120, "max_connection_age_grace": 30, "keepalive_time": 45, "keepalive_timeout": 10,
        "keepalive_min_client_interval": 5}), env_file=None)
    options = dict(server_connection_options(settings))
    assert options["grpc.max_connection_age_ms"] == 120_000
    assert options["grpc.max_connection_age_grace_ms"] == 30_000
    assert options["grpc.keepalive_time_ms"] == 45_000
    assert options["grpc.keepalive_timeout_ms"] == 10_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 5_000


async def test_an_old_connection_gets_goaway_and_the_client_reconnects(gateway_factory: GatewayFactory) -> None:
    app = await gateway_factory(mock_config(server={"max_connection_age": 1, "max_connection_age_grace": 1}))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}",
                                         options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = pb_grpc.ModelGatewayStub(channel)
        assert (await stub.GetStatus(pb.GetStatusRequest(), timeout=10)).status == "running"
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        # The server closes the connection after about a second (GOAWAY): the channel leaves READY
        # by itself, with no call of ours failing.
        async with asyncio.timeout(20):
            await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)
        assert channel.get_state() != grpc.ChannelConnectivity.READY
        # The next call opens a new connection.
        assert (await stub.GetStatus(pb.GetStatusRequest(), timeout=10)).status == "running"
