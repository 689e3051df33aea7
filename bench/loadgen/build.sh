#!/bin/sh
# Builds Baton's load generator into bench/.build/loadgen.
# Needs only Debian's golang-go (Go standard library, no module downloads);
# installs it with apt-get when no `go` is on PATH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(cd "$here/.." && pwd)/.build
mkdir -p "$out"

if ! command -v go >/dev/null 2>&1; then
    if [ -x /usr/lib/go/bin/go ]; then
        PATH=/usr/lib/go/bin:$PATH
    else
        echo "build.sh: no go on PATH, installing Debian's golang-go" >&2
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q golang-go
    fi
fi

# Offline and self-contained: no module proxy, no toolchain download, build
# cache under bench/.build (works without $HOME, e.g. in CI).
export GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0
export GOCACHE="${GOCACHE:-$out/gocache}"
cd "$here"
go build -trimpath -buildvcs=false -o "$out/loadgen" .
echo "built $out/loadgen ($(go version))" >&2
