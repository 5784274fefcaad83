#!/bin/sh
# irsafs-entrypoint: serve AWS_CONFIG_FILE from irsafs, then run the workload command.
#
#   ENTRYPOINT ["/usr/local/bin/irsafs-entrypoint"]   CMD ["sh"]
#   docker run ... IMAGE sh -c 'cat "$AWS_CONFIG_FILE"'
#
# What it does, precisely (docs/deploy.md has the same text for users):
#
# 1. AWS_CONFIG_FILE (default /var/run/.aws/config) is split into DIR and NAME; DIR is created
#    when missing and exported AWS_CONFIG_FILE is left pointing at DIR/NAME. irsafs itself reads
#    the Domino environment: DOMINO_IRSA_ENDPOINT, DOMINO_API_PROXY, DOMINO_RUN_ID,
#    POD_INFO_PATH, DOMINO_IRSA_SSL_CERT (see `irsafs mount --help`).
#
# 2. IRSAFS_MODE=mount (the default): `irsafs mount -f --file NAME $IRSAFS_ARGS
#    $IRSAFS_MOUNT_ARGS DIR` runs in the background under a small supervisor. The entrypoint
#    waits until DIR shows as a FUSE mount in /proc/self/mountinfo, at most
#    IRSAFS_MOUNT_TIMEOUT seconds (default 30). Nothing is fetched yet: the first read of the
#    file fetches it (add --prefetch to IRSAFS_MOUNT_ARGS to fetch at once).
#    If irsafs exits before the mount is ready (no /dev/fuse, no CAP_SYS_ADMIN, bad options),
#    or the mount is not ready in time, the entrypoint prints an ERROR and exits 70 WITHOUT
#    running the workload: a workload without its AWS config must not start silently.
#
# 3. The workload ("$@", default `sh`) then runs as a child of the entrypoint, with SIGINT and
#    SIGQUIT reset to their defaults. The entrypoint forwards SIGTERM, SIGINT, SIGQUIT and SIGUSR2
#    to it; SIGINT is not forwarded while standard input is a terminal (the terminal already
#    sends Ctrl-C to the whole process group, the workload included). SIGHUP is NOT forwarded:
#    it makes irsafs fetch the config again now (a refresh). SIGUSR1 is the entrypoint's own.
#
# 4. If the irsafs daemon exits while the workload runs (killed, crashed, unmounted by hand):
#    - IRSAFS_ON_DAEMON_EXIT=remount (the default): an ERROR line goes to stderr, the dead
#      daemon's mount is detached and a new `irsafs mount` starts on the same DIR at once; it
#      fetches again on the next read. Until it is mounted (milliseconds), the dead mount serves
#      only what the kernel had cached, and then DIR is briefly the plain directory underneath.
#      When a restarted daemon dies again within 60 s, the next start waits 1, 2, 4, ... up to
#      30 s. Every death and failed start prints an ERROR line; restarts go on for as long as
#      the workload runs. "irsafs-entrypoint: mount restored" is printed once it is back.
#    - IRSAFS_ON_DAEMON_EXIT=fail: an ERROR line goes to stderr, the workload gets SIGTERM, and
#      the entrypoint exits 70 once the workload has exited.
#
# 5. When the workload exits, irsafs gets SIGTERM and unmounts DIR (at most
#    IRSAFS_STOP_TIMEOUT seconds, default 10, then SIGKILL and `fusermount3 -uz DIR`), and the
#    entrypoint exits with the workload's exit status (128+N when a signal N ended it).
#
# IRSAFS_MODE=fetch (clusters without FUSE): `irsafs fetch $IRSAFS_ARGS -o AWS_CONFIG_FILE`
#    once (written atomically), then exec the workload. A failed fetch prints an ERROR and exits
#    70 without running the workload. No laziness, no coalescing, no refresh.
# IRSAFS_MODE=off: exec the workload and do nothing else.
#
# Other variables: IRSAFS_BIN (default irsafs, from PATH), IRSAFS_ARGS (options for both
# `irsafs mount` and `irsafs fetch`, e.g. "--log-format json --deadline 60"), IRSAFS_MOUNT_ARGS
# (options for `irsafs mount` only, e.g. "--prefetch --refresh-interval 3600 --read-only").
# Both are split on white space (no quoting inside them).
#
# Exit status: the workload's; 70 when the entrypoint itself failed (see above); 64 for a bad
# setting of this script.

# Functions run from traps look unreachable to shellcheck:
# shellcheck disable=SC2317

set -u

me='irsafs-entrypoint'
EX_FAILED=70
EX_USAGE=64

log() { printf '%s: %s\n' "$me" "$*" >&2; }
error() { printf '%s: ERROR: %s\n' "$me" "$*" >&2; }

config_file=${AWS_CONFIG_FILE:-/var/run/.aws/config}
mode=${IRSAFS_MODE:-mount}
irsafs=${IRSAFS_BIN:-irsafs}
on_daemon_exit=${IRSAFS_ON_DAEMON_EXIT:-remount}
mount_timeout=${IRSAFS_MOUNT_TIMEOUT:-30}
stop_timeout=${IRSAFS_STOP_TIMEOUT:-10}
irsafs_args=${IRSAFS_ARGS:-}
mount_args=${IRSAFS_MOUNT_ARGS:-}

if [ "$#" -eq 0 ]; then
    set -- sh
fi

is_uint() {
    case $1 in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

for setting in "IRSAFS_MOUNT_TIMEOUT=$mount_timeout" "IRSAFS_STOP_TIMEOUT=$stop_timeout"; do
    if ! is_uint "${setting#*=}"; then
        error "$setting must be a whole number of seconds"
        exit "$EX_USAGE"
    fi
done
case $on_daemon_exit in
    remount | fail) ;;
    *)
        error "IRSAFS_ON_DAEMON_EXIT must be remount or fail, not '$on_daemon_exit'"
        exit "$EX_USAGE"
        ;;
esac
case $config_file in
    */) error "AWS_CONFIG_FILE must name a file, not a directory: '$config_file'"; exit "$EX_USAGE" ;;
    /*) ;;
    *) config_file=$PWD/$config_file ;;
esac
export AWS_CONFIG_FILE="$config_file"

# ---------------------------------------------------------------------------------------------
# IRSAFS_MODE=off and IRSAFS_MODE=fetch
# ---------------------------------------------------------------------------------------------

if [ "$mode" = off ]; then
    exec "$@"
fi
if ! command -v "$irsafs" >/dev/null 2>&1; then
    error "cannot find the irsafs program '$irsafs' (set IRSAFS_BIN)"
    exit "$EX_FAILED"
fi

case $mode in
    fetch)
        mkdir -p "$(dirname "$config_file")" || {
            error "cannot create the directory of AWS_CONFIG_FILE=$config_file"
            exit "$EX_FAILED"
        }
        # shellcheck disable=SC2086 # IRSAFS_ARGS is a list of options, split on purpose
        if ! "$irsafs" fetch $irsafs_args -o "$config_file"; then
            error "irsafs fetch failed: $config_file was not written; not starting: $*"
            exit "$EX_FAILED"
        fi
        log "wrote $config_file (IRSAFS_MODE=fetch: it is not refreshed)"
        exec "$@"
        ;;
    mount) ;;
    *)
        error "IRSAFS_MODE must be mount, fetch or off, not '$mode'"
        exit "$EX_USAGE"
        ;;
esac

# ---------------------------------------------------------------------------------------------
# IRSAFS_MODE=mount
# ---------------------------------------------------------------------------------------------

name=$(basename "$config_file")
dir=$(dirname "$config_file")
mkdir -p "$dir" 2>/dev/null  # irsafs says what is wrong with DIR if this failed
# The canonical path is what /proc/self/mountinfo shows (/var/run is a link to /run).
if ! mountpoint_path=$(cd "$dir" 2>/dev/null && pwd -P); then
    # A stale mount from an earlier daemon fails stat with ENOTCONN: resolve the parent.
    parent=$(cd "$(dirname "$dir")" && pwd -P) || {
        error "cannot resolve $dir"
        exit "$EX_FAILED"
    }
    mountpoint_path=${parent%/}/$(basename "$dir")
fi

# The topmost mount on $mountpoint_path as "ID FSTYPE", or nothing. (The kernel may give a new
# mount the id of one that is gone.)
top_mount() {
    awk -v p="$mountpoint_path" '
        $5 == p { id = $1; t = ""; for (i = 6; i < NF; i++) if ($i == "-") { t = $(i + 1); break } }
        END { if (id != "") print id, t }' /proc/self/mountinfo
}

# True when the topmost mount on $mountpoint_path is a FUSE file system.
is_mounted() {
    case $(top_mount) in
        *" fuse"*) return 0 ;;
        *) return 1 ;;
    esac
}

# True when CAP_SYS_ADMIN is in the bounding set (fusermount3, setuid root, can then use it
# for a non-root user too).
has_cap_sys_admin() {
    cap_bnd=$(awk '$1 == "CapBnd:" { print $2 }' /proc/self/status 2>/dev/null)
    [ -n "$cap_bnd" ] && [ $((0x$cap_bnd & 0x200000)) -ne 0 ]
}

# Seconds since the epoch.
now() { date +%s; }

# wait_mounted PID TIMEOUT BEFORE: 0 once a FUSE mount other than BEFORE (the top_mount seen
# before PID started) is on top of $mountpoint_path; 1 when PID exited first; 2 on time-out.
wait_mounted() {
    wm_end=$(($(now) + $2))
    while :; do
        wm_top=$(top_mount)
        case $wm_top in
            "$3") ;;
            *" fuse"*) return 0 ;;
        esac
        if ! kill -0 "$1" 2>/dev/null; then
            return 1
        fi
        if [ "$(now)" -ge "$wm_end" ]; then
            return 2
        fi
        sleep 0.05 2>/dev/null || sleep 1
    done
}

state=$(mktemp -d "${TMPDIR:-/tmp}/irsafs-entrypoint.XXXXXX") || {
    error "cannot create a temporary directory"
    exit "$EX_FAILED"
}
ready_file=$state/ready
daemon_pid_file=$state/daemon.pid

# detach_stale MOUNT: a dead daemon's mount (MOUNT is what top_mount showed while it lived)
# stays on top until detached, still serving what the kernel had cached while new lookups fail
# with ENOTCONN. A new `irsafs mount` detects and detaches it too (older builds missed it when
# the root's attributes were cached); doing it here, right before the next start, keeps the
# restart independent of that.
detach_stale() {
    if [ -n "$1" ] && [ "$(top_mount)" = "$1" ]; then
        if fusermount3 -uz "$mountpoint_path" 2>/dev/null || umount -l "$mountpoint_path" 2>/dev/null; then
            log "detached the dead daemon's mount on $mountpoint_path"
        else
            error "cannot detach the dead daemon's mount on $mountpoint_path"
        fi
    fi
}

# The supervisor: a background subshell that runs the daemon in the foreground (-f), tells the
# entrypoint when the first mount is ready (or exits 1 when it never gets ready), and starts the
# daemon again when it exits while the entrypoint has not asked it to stop.
supervise() {
    sv_stopping=0
    sv_daemon=
    sv_stop() {
        sv_stopping=1
        if [ -n "$sv_daemon" ]; then
            kill -TERM "$sv_daemon" 2>/dev/null
        fi
    }
    sv_refresh() {
        if [ -n "$sv_daemon" ]; then
            kill -HUP "$sv_daemon" 2>/dev/null
        fi
    }
    trap sv_stop TERM
    trap sv_refresh HUP
    sv_mounted=
    sv_restarts=0
    sv_delay=0
    while :; do
        detach_stale "$sv_mounted"
        sv_started=$(now)
        sv_before=$(top_mount)
        # shellcheck disable=SC2086 # option lists, split on purpose
        "$irsafs" mount -f --file "$name" $irsafs_args $mount_args "$mountpoint_path" &
        sv_daemon=$!
        echo "$sv_daemon" >"$daemon_pid_file"
        wait_mounted "$sv_daemon" "$mount_timeout" "$sv_before"
        sv_ready=$?
        if [ "$sv_ready" -eq 2 ]; then
            error "irsafs (pid $sv_daemon) did not mount $mountpoint_path within ${mount_timeout}s (IRSAFS_MOUNT_TIMEOUT); stopping it"
            kill -TERM "$sv_daemon" 2>/dev/null
        fi
        sv_mounted=
        if [ "$sv_ready" -eq 0 ]; then
            sv_mounted=$(top_mount)
            if [ "$sv_restarts" -eq 0 ]; then
                : >"$ready_file"
            else
                log "mount restored on $mountpoint_path (irsafs pid $sv_daemon, restart $sv_restarts)"
            fi
        fi
        # wait returns early when a trapped signal arrives: wait again until the daemon is gone.
        while :; do
            wait "$sv_daemon"
            sv_status=$?
            kill -0 "$sv_daemon" 2>/dev/null || break
        done
        sv_daemon=
        if [ "$sv_stopping" -eq 1 ]; then
            exit 0
        fi
        if [ ! -e "$ready_file" ]; then
            exit "$sv_status"  # the first mount never got ready: the entrypoint reports it
        fi
        error "the irsafs daemon exited (status $sv_status): $config_file is not being served"
        if [ "$on_daemon_exit" = fail ]; then
            error "IRSAFS_ON_DAEMON_EXIT=fail: stopping the workload"
            detach_stale "$sv_mounted"
            kill -USR1 "$main_pid" 2>/dev/null
            exit 1
        fi
        # Back off when the daemon keeps dying young; start again at once after a long life.
        if [ $(($(now) - sv_started)) -ge 60 ]; then
            sv_delay=0
        fi
        sv_restarts=$((sv_restarts + 1))
        if [ "$sv_delay" -gt 0 ]; then
            error "restarting irsafs in ${sv_delay}s (restart $sv_restarts)"
            sleep "$sv_delay" &
            wait $! 2>/dev/null
            if [ "$sv_stopping" -eq 1 ]; then
                exit 0
            fi
            sv_delay=$((sv_delay * 2))
            if [ "$sv_delay" -gt 30 ]; then
                sv_delay=30
            fi
        else
            error "restarting irsafs on $mountpoint_path now (restart $sv_restarts)"
            sv_delay=1
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# Signals (set before the supervisor starts: it may report a dead daemon at any time)
# ---------------------------------------------------------------------------------------------

workload=
got_signal=0
daemon_failed=0
early_signal=

forward() {
    got_signal=1
    if [ -n "$workload" ]; then
        kill "-$1" "$workload" 2>/dev/null
    elif [ -z "$early_signal" ]; then
        early_signal=$1  # before the workload started: do not start it
    fi
}
on_int() {
    # Under a terminal, Ctrl-C already reached the workload (same process group).
    if [ -z "$workload" ] || [ ! -t 0 ]; then
        forward INT
    fi
}
on_hup() {
    got_signal=1
    kill -HUP "$supervisor" 2>/dev/null
}
on_daemon_failed() {
    daemon_failed=1
    forward TERM
}
trap 'forward TERM' TERM
trap on_int INT
trap 'forward QUIT' QUIT
trap 'forward USR2' USR2
trap on_hup HUP
trap on_daemon_failed USR1

# Stops the daemon (it unmounts on SIGTERM) and the supervisor, within IRSAFS_STOP_TIMEOUT.
stop_irsafs() {
    trap - TERM INT QUIT USR1 USR2 HUP
    kill -TERM "$supervisor" 2>/dev/null
    stop_end=$(($(now) + stop_timeout))
    while kill -0 "$supervisor" 2>/dev/null; do
        if [ "$(now)" -ge "$stop_end" ]; then
            error "irsafs did not stop within ${stop_timeout}s (IRSAFS_STOP_TIMEOUT); killing it and detaching $mountpoint_path"
            kill -KILL "$supervisor" "$(cat "$daemon_pid_file" 2>/dev/null)" 2>/dev/null
            if is_mounted; then
                fusermount3 -uz "$mountpoint_path" 2>/dev/null || umount -l "$mountpoint_path" 2>/dev/null
            fi
            break
        fi
        sleep 0.05 2>/dev/null || sleep 1
    done
    wait "$supervisor" 2>/dev/null
    rm -rf "$state"
}

signal_status() {
    case $1 in
        INT) echo 130 ;;
        QUIT) echo 131 ;;
        USR2) echo 140 ;;
        *) echo 143 ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Mount, and wait until it is ready
# ---------------------------------------------------------------------------------------------

# A FUSE mount already there: a dead daemon's (from an earlier run in this mount namespace) is
# detached; a live one makes irsafs refuse to mount ("busy"), loudly.
case $(top_mount) in
    *" fuse"*)
        if ! ls -a "$mountpoint_path" >/dev/null 2>&1; then
            log "$mountpoint_path holds a dead FUSE mount; detaching it"
            fusermount3 -uz "$mountpoint_path" 2>/dev/null || umount -l "$mountpoint_path" 2>/dev/null
        fi
        ;;
esac

main_pid=$$
supervise &
supervisor=$!

# Wait for the supervisor's word: ready, or gone.
while [ ! -e "$ready_file" ]; do
    if [ -n "$early_signal" ]; then
        log "got SIG$early_signal before the mount was ready: stopping, the workload was not started"
        stop_irsafs
        exit "$(signal_status "$early_signal")"
    fi
    if ! kill -0 "$supervisor" 2>/dev/null; then
        wait "$supervisor"
        first_status=$?
        error "irsafs could not mount $mountpoint_path (status $first_status; its own error is above)"
        if [ "$first_status" -eq 2 ]; then
            error "irsafs rejected its options or the environment: check DOMINO_RUN_ID, DOMINO_IRSA_ENDPOINT, DOMINO_API_PROXY, IRSAFS_ARGS and IRSAFS_MOUNT_ARGS"
        else
            if [ ! -e /dev/fuse ]; then
                error "/dev/fuse is missing: give the container the FUSE device (docker/podman: --device /dev/fuse; Kubernetes: a hostPath CharDevice volume, a FUSE device plugin, or privileged: true)"
            fi
            if ! has_cap_sys_admin; then
                error "CAP_SYS_ADMIN is missing: FUSE mounts need it (docker/podman: --cap-add SYS_ADMIN; Kubernetes: securityContext.capabilities.add: [SYS_ADMIN], or privileged: true)"
            fi
            error "where FUSE is forbidden, use IRSAFS_MODE=fetch (a one-time copy of the config, never refreshed)"
        fi
        error "not starting the workload: $*"
        rm -rf "$state"
        exit "$EX_FAILED"
    fi
    sleep 0.05 2>/dev/null || sleep 1
done
if [ -n "$early_signal" ] || [ "$daemon_failed" -eq 1 ]; then
    stop_irsafs
    if [ "$daemon_failed" -eq 1 ]; then
        error "exiting $EX_FAILED: the irsafs daemon died before the workload started (IRSAFS_ON_DAEMON_EXIT=fail)"
        exit "$EX_FAILED"
    fi
    log "got SIG$early_signal before the workload started: not starting it"
    exit "$(signal_status "$early_signal")"
fi

# ---------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------

# An asynchronous command gets SIGINT and SIGQUIT ignored from sh: give them back.
env --default-signal=INT,QUIT -- "$@" &
workload=$!

# `wait` returns early (status > 128) when a trapped signal arrives. A second wait for the same
# pid returns the real status if the first was interrupted, and 127 if the first had already
# collected it.
got_signal=0
wait "$workload"
status=$?
while [ "$got_signal" -eq 1 ]; do
    got_signal=0
    wait "$workload"
    again=$?
    if [ "$again" -eq 127 ] && ! kill -0 "$workload" 2>/dev/null; then
        break
    fi
    status=$again
done

stop_irsafs
if [ "$daemon_failed" -eq 1 ]; then
    error "exiting $EX_FAILED: the irsafs daemon died (IRSAFS_ON_DAEMON_EXIT=fail); the workload's status was $status"
    exit "$EX_FAILED"
fi
exit "$status"
