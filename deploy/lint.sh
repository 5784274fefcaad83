#!/bin/sh
# Lint for the deployment files and every shell script in the repository, offline:
#   1. shellcheck on every shell script of the source tree (found with find, so a source
#      tarball without git works too; build directories build*/, .git, .cache, node_modules and
#      __pycache__ are skipped): *.sh, and files whose first line is a sh/bash/dash shebang,
#      such as .ci/run;
#   2. yamllint on deploy/**/*.yaml (the "relaxed" preset, lines up to 100 characters, and
#      --strict: a warning is a finding too);
#   3. the Kubernetes manifests: deploy/validate-manifests.mjs (the npm package
#      kubernetes-models: schemas and unknown fields of the built-in kinds and of the pod
#      templates inside the RayCluster and the Mutation), and `kubectl kustomize deploy/k8s`
#      when kubectl is installed (it needs no cluster).
# Installs what is missing: shellcheck, yamllint, nodejs and npm with apt-get (as root), and the
# npm packages into IRSAFS_LINT_CACHE (default ~/.cache/irsafs-lint).
# Exit status: 0 when clean, 1 on any finding, 2 when a tool cannot be installed.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$root"
cache=${IRSAFS_LINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/irsafs-lint}
npm_packages="kubernetes-models@4.5.1 yaml@2.9.1"
status=0

say() { printf '== %s\n' "$*"; }
fail() {
    printf 'lint: FAIL: %s\n' "$*" >&2
    status=1
}

# ---- tools
missing=
for tool in shellcheck yamllint node npm; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    packages=
    for tool in $missing; do
        case $tool in
            node) packages="$packages nodejs" ;;
            *) packages="$packages $tool" ;;
        esac
    done
    if [ "$(id -u)" -ne 0 ]; then
        echo "lint: missing:$missing (as root: apt-get install -y$packages)" >&2
        exit 2
    fi
    say "installing$packages"
    # shellcheck disable=SC2086 # a list of package names
    if ! { apt-get install -y -q $packages >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q $packages >/dev/null; }; }; then
        echo "lint: cannot install$packages" >&2
        exit 2
    fi
fi

# ---- 1. shell scripts
say "shellcheck"
scripts=$(find . \( -name .git -o -name .cache -o -name node_modules -o -name __pycache__ \
    -o -path './build*' \) -prune -o -type f -print | sed 's|^\./||' | sort | while IFS= read -r f; do
    case $f in
        *.sh) echo "$f" ;;
        *)
            first=$(head -n 1 "$f" 2>/dev/null | tr -d '\0' || true)
            case $first in
                '#!'*/sh | '#!'*/sh' '* | '#!'*bash* | '#!'*/dash*) echo "$f" ;;
            esac
            ;;
    esac
done)
if [ -z "$scripts" ]; then
    fail "no shell scripts found under $root"
else
    # shellcheck disable=SC2086 # file names from find, one per line, no spaces in this repo
    if ! shellcheck --external-sources $scripts; then
        fail "shellcheck"
    else
        echo "$scripts" | sed 's/^/   ok  /'
    fi
fi

# ---- 2. YAML
say "yamllint (relaxed, max line 100, strict)"
# deploy/testdata holds upstream's files as they are (the chart's rendered Mutation).
yaml_files=$(find deploy -path deploy/testdata -prune -o \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
yamllint_config='{extends: relaxed, rules: {line-length: {max: 100, level: error}}}'
# shellcheck disable=SC2086
if ! yamllint --strict -d "$yamllint_config" $yaml_files; then
    fail "yamllint"
else
    echo "$yaml_files" | sed 's/^/   ok  /'
fi

# ---- 3. Kubernetes manifests
say "manifests: deploy/validate-manifests.mjs (kubernetes-models)"
stamp="$cache/installed"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$npm_packages" ]; then
    mkdir -p "$cache"
    # shellcheck disable=SC2086
    if ! npm install --prefix "$cache" --no-audit --no-fund --no-save --loglevel=error \
        $npm_packages >"$cache/npm.log" 2>&1; then
        cat "$cache/npm.log" >&2
        echo "lint: npm install $npm_packages failed" >&2
        exit 2
    fi
    echo "$npm_packages" >"$stamp"
fi
k8s_files=$(find deploy/k8s -name '*.yaml' | sort)
# shellcheck disable=SC2086
if ! NODE_PATH="$cache/node_modules" node deploy/validate-manifests.mjs $k8s_files; then
    fail "manifests"
fi

if command -v kubectl >/dev/null 2>&1; then
    say "manifests: kubectl kustomize deploy/k8s"
    if out=$(kubectl kustomize deploy/k8s 2>&1); then
        printf '   ok  %s documents\n' "$(printf '%s\n' "$out" | grep -c '^kind:')"
    else
        printf '%s\n' "$out" >&2
        fail "kubectl kustomize deploy/k8s"
    fi
else
    say "manifests: kubectl is not installed: skipping kubectl kustomize"
fi

if [ "$status" -eq 0 ]; then
    say "lint: clean"
fi
exit "$status"
