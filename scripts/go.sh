#!/usr/bin/env bash
# Prints the path of a Go toolchain new enough for this module (the version in
# go.mod), installing it from the Go module proxy if none is found. Used by the
# Makefile so that `make run` / `make test` work on a fresh Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(awk '$1 == "go" { print $2; exit }' go.mod)
dest=/usr/local/lib/preboot-go/go$want

newer_or_equal() { # $1 >= $2, dotted versions
	[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
for cand in "$(command -v go 2>/dev/null || true)" /usr/local/go/bin/go "$dest/bin/go"; do
	[ -n "$cand" ] && [ -x "$cand" ] || continue
	have=$("$cand" env GOVERSION 2>/dev/null | sed 's/^go//') || continue
	if newer_or_equal "$have" "$want"; then
		echo "$cand"
		exit 0
	fi
done

echo "scripts/go.sh: installing Go $want from the Go module proxy into $dest" >&2
command -v curl >/dev/null && command -v unzip >/dev/null || {
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl unzip ca-certificates >&2
}
arch=$(dpkg --print-architecture)
proxy=${GOPROXY:-https://proxy.golang.org}
proxy=${proxy%%,*}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-$arch.zip"
unzip -q "$tmp/go.zip" -d "$tmp"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$tmp/golang.org/toolchain@v0.0.1-go$want.linux-$arch" "$dest"
chmod +x "$dest/bin/"* "$dest/pkg/tool/"*/* 2>/dev/null || true
echo "$dest/bin/go"
