#!/bin/sh
# irsafs-entrypoint: the irsafs image's entrypoint. docs/deploy.md says the same for users.
#
# With no arguments: the pod's sidecar (the old aws-config-file-generator's slot).
#   irsafs runs in the foreground as the container's main process and logs to stderr. It
#   mounts on IRSAFS_MOUNTPOINT (default: the directory of the config file + /.irsafs, a
#   subdirectory of the volume shared with the workload) and makes the config file
#   (IRSAFS_LINK, else AWS_CONFIG_FILE, else /var/run/.aws/config) a relative symbolic link to
#   the mounted file. The mount reaches the workload by mount propagation. Why a subdirectory:
#   after a crash, the kubelet's new container detaches the dead mount there and mounts again,
#   and the running workload sees it; a dead mount on the volume itself would stop the new
#   container from binding the volume. SIGTERM unmounts and exits 0.
#   The HTTP endpoints (/healthz, /refresh, ...) listen where DOMINO_IRSA_PROXY says (default
#   http://localhost:6003, the old sidecar's port).
#   The run id: DOMINO_RUN_ID, else derived from IRSAFS_SERVICE_ACCOUNT (the pod's service
#   account, given by the downward API): run-<id> for runs, <kind>-<id>-<kind> for clusters.
#   Ray clusters (IRSAFS_APP=ray, IRSAFS_CLUSTER_ROLE from the label
#   dominodatalab.com/irsa-workload-type, IRSAFS_CLUSTER the cluster's name): the head
#   (cluster-master) serves its config to the workers (--serve-peers 0.0.0.0:IRSAFS_PEER_PORT,
#   default 6010); a worker (cluster-worker) takes it from the head's service,
#   http://<cluster>-ray-head:IRSAFS_PEER_PORT, unless IRSAFS_PEER says otherwise.
#
# With a command: one container, for images users build themselves and plain containers.
#   IRSAFS_MODE=mount (default): `irsafs mount` on the config file's directory (it returns once
#   the mount is up), then exec the command. Without FUSE (no /dev/fuse or CAP_SYS_ADMIN) the
#   command does not start: exit 70 with the reason.
#   IRSAFS_MODE=fetch: `irsafs fetch -o AWS_CONFIG_FILE` once (no laziness, no refresh), then
#   exec the command; a failed fetch exits 70.
#   IRSAFS_MODE=off: exec the command.
#
# IRSAFS_ARGS: more options for irsafs (split on white space), e.g. "--log-format json".
set -eu

me=irsafs-entrypoint
EX_FAILED=70
error() { printf '%s: ERROR: %s\n' "$me" "$*" >&2; }

config=${AWS_CONFIG_FILE:-/var/run/.aws/config}
dir=$(dirname "$config")
name=$(basename "$config")
irsafs_args=${IRSAFS_ARGS:-}

if [ -z "${DOMINO_RUN_ID:-}" ] && [ -n "${IRSAFS_SERVICE_ACCOUNT:-}" ]; then
    sa=$IRSAFS_SERVICE_ACCOUNT
    case $sa in
        run-*) DOMINO_RUN_ID=${sa#run-} ;;
        spark-*-spark | ray-*-ray | dask-*-dask) kind=${sa%%-*}; id=${sa#"$kind"-}; DOMINO_RUN_ID=${id%-"$kind"} ;;
        *) error "cannot tell the run id from the service account '$sa': set DOMINO_RUN_ID"; exit "$EX_FAILED" ;;
    esac
    export DOMINO_RUN_ID
fi

if [ "$#" -eq 0 ]; then
    link=${IRSAFS_LINK:-$config}
    mnt=${IRSAFS_MOUNTPOINT:-$(dirname "$link")/.irsafs}
    # A dead mount left there by a killed sidecar fails mkdir; irsafs detaches it.
    mkdir -p "$mnt" 2>/dev/null || true
    export DOMINO_IRSA_PROXY="${DOMINO_IRSA_PROXY:-http://localhost:6003}"
    if [ "${IRSAFS_APP:-}" = ray ]; then
        port=${IRSAFS_PEER_PORT:-6010}
        case ${IRSAFS_CLUSTER_ROLE:-} in
            cluster-master) irsafs_args="--serve-peers 0.0.0.0:$port $irsafs_args" ;;
            cluster-worker)
                if [ -z "${IRSAFS_PEER:-}" ] && [ -n "${IRSAFS_CLUSTER:-}" ]; then
                    export IRSAFS_PEER="http://${IRSAFS_CLUSTER}-ray-head:$port"
                fi
                ;;
        esac
    fi
    # shellcheck disable=SC2086 # IRSAFS_ARGS is split on white space on purpose
    exec irsafs mount --foreground --file "$(basename "$link")" --link "$link" $irsafs_args "$mnt"
fi

case ${IRSAFS_MODE:-mount} in
    mount)
        mkdir -p "$dir"
        if [ ! -c /dev/fuse ]; then
            error "/dev/fuse is missing (docker/podman: --device /dev/fuse; Kubernetes: run irsafs as the pod's privileged sidecar, docs/deploy.md); not starting the workload: $*"
            error "where FUSE is forbidden, use IRSAFS_MODE=fetch (a one-time copy of the config, never refreshed)"
            exit "$EX_FAILED"
        fi
        # CAP_SYS_ADMIN is bit 21 of the effective set.
        capeff=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)
        if [ $(((0x$capeff >> 21) & 1)) -eq 0 ]; then
            error "CAP_SYS_ADMIN is missing (docker/podman: --cap-add SYS_ADMIN); not starting the workload: $*"
            error "where FUSE is forbidden, use IRSAFS_MODE=fetch (a one-time copy of the config, never refreshed)"
            exit "$EX_FAILED"
        fi
        # shellcheck disable=SC2086
        if ! irsafs mount --file "$name" $irsafs_args "$dir"; then
            error "Cannot mount irsafs on $dir; not starting the workload: $*"
            exit "$EX_FAILED"
        fi
        ;;
    fetch)
        mkdir -p "$dir"
        # shellcheck disable=SC2086
        if ! irsafs fetch $irsafs_args -o "$config"; then
            error "irsafs fetch failed: $config was not written; not starting the workload: $*"
            exit "$EX_FAILED"
        fi
        printf '%s: wrote %s (IRSAFS_MODE=fetch: it is not refreshed)\n' "$me" "$config" >&2
        ;;
    off) ;;
    *)
        error "IRSAFS_MODE must be mount, fetch or off, not '${IRSAFS_MODE}'"
        exit 64
        ;;
esac
exec "$@"
