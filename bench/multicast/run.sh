#!/usr/bin/env bash
# Multicast benchmark (issue 10): one synthetic disk image restored onto 1, 8 and 32 receivers at once
# in the namespace lab of e2e/nslab, side by side in one run: Debian's udpcast as FOG runs it, plain
# unicast HTTP (curl | zstd -d), `preboot agent restore` over HTTP, with --multicast and with --peers.
# Scenarios: clean; 3 % loss; one receiver at a quarter of the link; a late joiner; multicast blocked.
# Not part of `go test`. About 15 minutes.
#
#   sudo bench/multicast/run.sh                                   # everything
#   ARGS="-scenarios clean-8,slow-8 -tools udpcast,unicast" sudo -E bench/multicast/run.sh
#
# Env: ARGS (more flags for the program: `go run ./bench/multicast -h`), OUT_MD
#      (docs/benchmarks-multicast.md), PREBOOT_BIN (use this preboot binary instead of building one),
#      NO_PREBOOT=1 (udpcast and unicast only).
#
# Needs root, iproute2, nftables, udpcast, zstd, curl, e2fsprogs, go. Everything runs in network
# namespaces the program creates (preboot-bench-mc-<id>-*, no route out) on files in /dev/shm; every
# process is stopped by PID and the namespaces are removed when it ends.
#
# Output: the markdown report on stdout, also written to OUT_MD (text after the "<!-- notes -->"
# line of an existing OUT_MD is kept).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT_MD=${OUT_MD:-$REPO/docs/benchmarks-multicast.md}
ARGS=${ARGS:-}

[[ $(id -u) -eq 0 ]] || { echo "run as root (network namespaces, tc, nftables)" >&2; exit 1; }
for tool in go ip tc nft udp-sender udp-receiver zstd curl mkfs.ext4; do
	command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install iproute2 nftables udpcast zstd curl e2fsprogs)" >&2; exit 1; }
done

BIN=$(mktemp -d /tmp/preboot-bench-mc-bin.XXXXXX)
trap 'rm -rf "$BIN"' EXIT
cd "$REPO"
go build -o "$BIN/mcbench" ./bench/multicast
PREBOOT_ARGS=()
if [[ ${NO_PREBOOT:-0} != 1 ]]; then
	if [[ -n ${PREBOOT_BIN:-} ]]; then
		PREBOOT_ARGS=(-preboot "$(realpath "$PREBOOT_BIN")" -preboot-label "$PREBOOT_BIN")
	else
		CGO_ENABLED=0 go build -o "$BIN/preboot" ./cmd/preboot
		LABEL="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
		if [[ -n $(git status --porcelain -- . ':!docs' 2>/dev/null) ]]; then LABEL="$LABEL + uncommitted changes"; fi
		PREBOOT_ARGS=(-preboot "$BIN/preboot" -preboot-label "$LABEL")
	fi
fi

# shellcheck disable=SC2086
"$BIN/mcbench" "${PREBOOT_ARGS[@]}" -md "$BIN/report.md" $ARGS >/dev/null

NOTES=""
if [[ -f $OUT_MD ]] && grep -q '^<!-- notes -->' "$OUT_MD"; then
	NOTES=$(sed -n '/^<!-- notes -->/,$p' "$OUT_MD")
fi
{
	cat "$BIN/report.md"
	if [[ -n $NOTES ]]; then
		echo
		echo "$NOTES"
	fi
} >"$OUT_MD.tmp"
mv "$OUT_MD.tmp" "$OUT_MD"
cat "$OUT_MD"
