#!/usr/bin/env bash
# The gRPC code generators of other languages, for tests/contract/test_codegen.py: Debian's
# grpc_cpp_plugin and grpc_java_plugin. Installed only where we are root with apt-get (CI, a dev
# container); elsewhere the service-stub tests skip with a message. Never fails the build.
set -u
if command -v grpc_cpp_plugin >/dev/null && command -v grpc_java_plugin >/dev/null; then
  echo "codegen-deps: gRPC plugins present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "codegen-deps: skipped (needs root and apt-get: apt-get install protobuf-compiler-grpc protobuf-compiler-grpc-java-plugin)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if apt-get install -y -qq protobuf-compiler-grpc protobuf-compiler-grpc-java-plugin >/dev/null 2>&1 \
   || { apt-get update -qq >/dev/null 2>&1 \
        && apt-get install -y -qq protobuf-compiler-grpc protobuf-compiler-grpc-java-plugin >/dev/null 2>&1; }; then
  echo "codegen-deps: installed grpc_cpp_plugin and grpc_java_plugin (Debian)"
else
  echo "codegen-deps: could not install the gRPC plugins; the service-stub tests will skip"
fi
exit 0
