#!/usr/bin/env bash
# Services the test suite starts itself: Debian's redis-server, for the rate-limit tests that share
# limits between gateway processes through a real Redis (tests/limits/). Installed with apt-get only
# when missing and only where we are root with apt-get (CI, a dev container); elsewhere those tests
# skip with a message naming this script. Never fails the build.
set -u
if command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ]; then
  echo "test-deps: redis-server present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "test-deps: skipped (needs root and apt-get: apt-get install redis-server); the Redis tests will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 \
   || { apt-get update -qq >/dev/null 2>&1 \
        && apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1; }; then
  echo "test-deps: installed redis-server (Debian)"
else
  echo "test-deps: could not install redis-server; the Redis tests will skip"
fi
exit 0
