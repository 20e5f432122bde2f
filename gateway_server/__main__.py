from gateway_server.cli import run

run()
