#!/bin/sh
# Runs every test of irsafs: installs what is missing (Debian 12), builds, runs CTest
# (unit tests, mount tests, real AWS clients, the container test), then the sanitizer and
# fuzzing tiers when tools/ci-extra.sh exists.
#   ./test.sh                 everything
#   ./test.sh -L unit         only tests with a CTest label (unit, integration, slow)
set -eu
cd "$(dirname "$0")"
tools/install-deps.sh --test
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIRSAFS_BUILD_TESTS=ON -DIRSAFS_BUILD_BENCH=ON
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure --timeout 1800 "$@"
if [ $# -eq 0 ] && [ -x tools/ci-extra.sh ]; then
  tools/ci-extra.sh
fi
