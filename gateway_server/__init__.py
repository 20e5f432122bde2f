"""Model Gateway: a grpc.aio service in front of model providers, with automatic fallback."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("model-gateway")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
