#!/bin/sh
# The main job on a fresh Debian 12 machine: installs what is missing, builds irsafs, starts a
# local stand-in of irsa-svc and its token endpoint (with a test CA), mounts irsafs, and shows
# the virtual AWS config file and its status. Everything is torn down at the end.
set -eu
cd "$(dirname "$0")"
top=$(pwd)
tools/install-deps.sh --demo
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIRSAFS_BUILD_TESTS=OFF -DIRSAFS_BUILD_BENCH=OFF >/dev/null
cmake --build build-demo -j"$(nproc)" --target irsafs

work=$(mktemp -d /tmp/irsafs-demo.XXXXXX)
standin_pid=""
cleanup() {
  if grep -q " $work/aws " /proc/self/mountinfo 2>/dev/null; then
    fusermount3 -u "$work/aws" 2>/dev/null || umount -l "$work/aws" 2>/dev/null || true
  fi
  [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null && wait "$standin_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

/usr/bin/python3 "$top/tests/standin/irsa_standin.py" --state-dir "$work/standin" >"$work/standin.log" 2>&1 &
standin_pid=$!
i=0
while [ ! -s "$work/standin/standin.json" ]; do
  i=$((i + 1))
  [ $i -gt 100 ] && { echo "the stand-in did not start:"; cat "$work/standin.log"; exit 1; }
  sleep 0.1
done
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/standin/standin.json" "$1"; }

# The environment a Domino run container has.
DOMINO_IRSA_ENDPOINT=$(field endpoint)
DOMINO_API_PROXY=$(field api_proxy)
DOMINO_IRSA_SSL_CERT=$(field ca_file)
DOMINO_RUN_ID=demo-run-1
AWS_CONFIG_FILE=$work/aws/config
export DOMINO_IRSA_ENDPOINT DOMINO_API_PROXY DOMINO_IRSA_SSL_CERT DOMINO_RUN_ID AWS_CONFIG_FILE
mkdir -p "$work/aws"

# The old sidecar's port in a pod is 6003 (DOMINO_IRSA_PROXY); here any free one.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
get() { python3 -c "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" "http://127.0.0.1:$port$1"; }

echo "\$ irsafs mount --listen 127.0.0.1:$port $work/aws"
build-demo/irsafs mount --listen "127.0.0.1:$port" "$work/aws"
echo
echo "\$ ls -la $work/aws        # nothing fetched yet (stat shows size 0 before the first read)"
ls -la "$work/aws"
echo
echo "\$ cat \$AWS_CONFIG_FILE     # the first read fetches, once, for every reader"
cat "$AWS_CONFIG_FILE"
echo
echo "\$ cat $work/aws/.status"
cat "$work/aws/.status"
echo
echo "\$ curl http://127.0.0.1:$port/healthz; curl http://127.0.0.1:$port/refresh   # as the old sidecar"
get /healthz
get /refresh
echo
echo "\$ fusermount3 -u $work/aws"
fusermount3 -u "$work/aws"
