#!/usr/bin/env bash
# h2load (Debian's nghttp2-client), the C HTTP/2 load generator of `python -m bench.serving`
# (make bench: calls/s with 1 and 2 workers). Installed only where we are root with apt-get;
# elsewhere the scaling part of the serving bench is skipped with a message. Never fails the build.
set -u
if command -v h2load >/dev/null; then
  echo "bench-deps: h2load present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "bench-deps: skipped (needs root and apt-get: apt-get install nghttp2-client)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get install -y -qq nghttp2-client >/dev/null 2>&1 \
   || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq nghttp2-client >/dev/null 2>&1; }; then
  echo "bench-deps: installed h2load (Debian nghttp2-client)"
else
  echo "bench-deps: could not install nghttp2-client; the scaling bench will be skipped"
fi
exit 0
