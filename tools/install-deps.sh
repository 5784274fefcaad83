#!/bin/sh
# Installs what irsafs needs on Debian 12, and only what is missing.
#   tools/install-deps.sh          build and run (compiler, cmake, libraries, fuse3)
#   tools/install-deps.sh --demo   also what demo.sh's stand-in of irsa-svc needs (trustme)
#   tools/install-deps.sh --test   also everything the tests use (GoogleTest, pytest, trustme,
#                                  awscli, boto3, podman for the container test, clang for fuzzing)
set -eu

runtime="build-essential cmake pkg-config libfuse3-dev fuse3 libcurl4-openssl-dev libssl-dev
nlohmann-json3-dev libspdlog-dev libcli11-dev libmicrohttpd-dev libpugixml-dev libcjose-dev ca-certificates python3"
# The stand-in of irsa-svc (tests/standin) makes its test certificates with python3-trustme.
demo="python3-trustme"
testing="googletest libgtest-dev libgmock-dev libbenchmark-dev python3-pytest python3-trustme python3-jwt
awscli python3-boto3 python3-prometheus-client
curl psmisc procps util-linux shellcheck yamllint podman runc debootstrap
clang-14 libfuzzer-14-dev libclang-rt-14-dev"

case ${1:-} in
  "") want=$runtime ;;
  --demo) want="$runtime $demo" ;;
  --test) want="$runtime $testing" ;;
  *) echo "usage: tools/install-deps.sh [--demo | --test]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
# Node.js and npm (the manifest check) often come from outside Debian (nodesource, nvm): only
# when no node/npm command exists are Debian's packages installed.
if [ "${1:-}" = "--test" ] && ! { command -v node >/dev/null && command -v npm >/dev/null; }; then
  missing="$missing nodejs npm"
fi
if [ -z "$missing" ]; then
  echo "install-deps: everything is installed"
  exit 0
fi
echo "install-deps: installing$missing"
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$SUDO apt-get install -y -qq --no-install-recommends $missing
