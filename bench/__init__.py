"""``python -m bench`` (``make bench``): CPU per call, throughput and latency of the gateway.

Every process under test runs apart from the load client: a fake Anthropic upstream
(``bench.fake_upstream``), the gateway itself (``python -m gateway_server --config <tmp yaml>``) in
each scenario, and a bare grpc.aio echo server (``bench.echo_server``) as the floor. See
bench/README.md.
"""
