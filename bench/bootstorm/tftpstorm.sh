#!/usr/bin/env bash
# The boot storm's TFTP phase alone, side by side in one run: N lock-step EDK2-like clients
# (bench/bootstorm/tftpstorm: blksize 1468, tsize, one source address each) download Debian's
# ipxe.efi from Preboot's TFTP server and from dnsmasq's, arrivals spread over SPREAD; rounds
# interleaved, server order rotated. With BEFORE=<a checkout of another commit> the Preboot server
# built from it runs alongside ("preboot-before"), for a before/after on the same run. Not part of
# `go test`.
#
#   sudo bench/bootstorm/tftpstorm.sh                          # 300 clients over 3 s, 3 rounds
#   N=1000 SPREAD=10s ROUNDS=1 sudo bench/bootstorm/tftpstorm.sh
#   BEFORE=/tmp/tftp-before sudo bench/bootstorm/tftpstorm.sh  # (git worktree add /tmp/tftp-before <commit>)
#
# Everything runs in a network namespace this script creates (preboot-tftpstorm) with only a
# loopback interface: no route out. Every server is stopped by its PID and the namespace removed on
# exit. Output: a markdown table on stdout; server CPU is utime+stime from /proc/PID/stat, per
# block sent (ipxe.efi is 580 blocks of 1468 bytes).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
N=${N:-300}
SPREAD=${SPREAD:-3s}
ROUNDS=${ROUNDS:-3}
FILE=${FILE:-/usr/lib/ipxe/ipxe.efi}
BEFORE=${BEFORE:-}
NS=preboot-tftpstorm

[[ $(id -u) -eq 0 ]] || { echo "run as root (network namespace)" >&2; exit 1; }
[[ -x /usr/sbin/dnsmasq ]] || { echo "missing /usr/sbin/dnsmasq (apt-get install dnsmasq-base)" >&2; exit 1; }
[[ -r $FILE ]] || { echo "missing $FILE (apt-get install ipxe)" >&2; exit 1; }
((N >= 1 && N <= 2000)) || { echo "1 <= N <= 2000" >&2; exit 1; }

WORK=$(mktemp -d /tmp/preboot-tftpstorm.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "# $*" >&2; }

mkdir -p "$WORK/root"
cp -L "$FILE" "$WORK/root/ipxe.efi"
chmod -R a+rX "$WORK/root"
SIZE=$(stat -c %s "$WORK/root/ipxe.efi")
BLOCKS=$((SIZE / 1468 + 1))

log "building tftpstorm"
(cd "$REPO" && go build -o "$WORK/tftpstorm" ./bench/bootstorm/tftpstorm)
SERVERS=(preboot dnsmasq)
if [[ -n $BEFORE ]]; then
	log "building tftpstorm from $BEFORE"
	(cd "$BEFORE" && go build -o "$WORK/tftpstorm-before" ./bench/bootstorm/tftpstorm)
	SERVERS=(preboot preboot-before dnsmasq)
fi
declare -A PORT=([preboot]=6901 [preboot-before]=6902 [dnsmasq]=69)
declare -A PID

ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up

for s in "${SERVERS[@]}"; do
	case $s in
	preboot) ip netns exec "$NS" "$WORK/tftpstorm" -serve -addr "127.0.0.1:${PORT[$s]}" -root "$WORK/root" 2>"$WORK/$s.log" & ;;
	preboot-before) ip netns exec "$NS" "$WORK/tftpstorm-before" -serve -addr "127.0.0.1:${PORT[$s]}" -root "$WORK/root" 2>"$WORK/$s.log" & ;;
	dnsmasq) ip netns exec "$NS" /usr/sbin/dnsmasq -k --conf-file=/dev/null --port=0 --enable-tftp --tftp-root="$WORK/root" \
		--listen-address=127.0.0.1 --bind-interfaces --tftp-max=2000 --quiet-tftp --pid-file= --log-facility="$WORK/$s.log" >/dev/null 2>&1 & ;;
	esac
	PID[$s]=$!
	PIDS+=("${PID[$s]}")
done
for s in "${SERVERS[@]}"; do
	for _ in $(seq 50); do
		ip netns exec "$NS" ss -Huln "sport = :${PORT[$s]}" | grep -q . && break
		sleep 0.1
	done
done
log "servers: $(for s in "${SERVERS[@]}"; do printf '%s=%s ' "$s" "${PID[$s]}"; done)"

TICK=$(getconf CLK_TCK)
cpu_ns() { awk -v hz="$TICK" '{ sub(/.*\) /, ""); printf "%.0f\n", ($12 + $13) * 1e9 / hz }' "/proc/$1/stat"; }

RESULTS=$WORK/results.tsv
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
	for i in "${!SERVERS[@]}"; do
		s=${SERVERS[$(((i + r) % ${#SERVERS[@]}))]}
		c0=$(cpu_ns "${PID[$s]}")
		line=$(ip netns exec "$NS" "$WORK/tftpstorm" -addr "127.0.0.1:${PORT[$s]}" -file ipxe.efi -n "$N" -spread "$SPREAD" -limit 170s | head -1)
		sleep 0.2
		c1=$(cpu_ns "${PID[$s]}")
		# clients N failures F total Ts | transfer p50 Xs p99 Ys max Zs | block RTT p50 ...
		read -r fails total p50 p99 < <(awk '{ gsub(/s$/, "", $6); gsub(/s$/, "", $10); gsub(/s$/, "", $12); print $4, $6, $10, $12 }' <<<"$line")
		ok=$((N - fails))
		cpu_us=$(awk -v ns=$((c1 - c0)) -v b=$((ok * BLOCKS)) 'BEGIN { if (b > 0) printf "%.2f", ns / 1e3 / b; else print "-" }')
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$s" "$fails" "$p50" "$p99" "$total" "$cpu_us" >>"$RESULTS"
		log "round $r $s: $line | server CPU $(((c1 - c0) / 1000000)) ms, $cpu_us µs/block"
	done
done

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { awk -F'\t' -v s="$1" -v c="$2" '$2 == s { print $c }' "$RESULTS" | median; }
echo "TFTP storm: $N clients over $SPREAD, ipxe.efi ($SIZE bytes, $BLOCKS blocks of 1468, lock-step), $ROUNDS interleaved round(s), median shown;"
echo "$(nproc) cores, load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| server | failures | transfer p50 s | p99 s | total s | server CPU µs per block |"
echo "|---|---:|---:|---:|---:|---:|"
for s in "${SERVERS[@]}"; do
	echo "| $s | $(col "$s" 3) | $(col "$s" 4) | $(col "$s" 5) | $(col "$s" 6) | $(col "$s" 7) |"
done
