#!/usr/bin/env bash
# proxyDHCP load benchmark: perfdhcp (Kea) sends PXE DHCPDISCOVERs from one
# network namespace to a proxy in another (veth pair, no route out) and counts
# the OFFERs. Preboot's proxydhcp and dnsmasq in proxy mode run side by side.
#
#   sudo bench/dhcp/run.sh                  # default rates and duration
#   RATES="1000 10000" DURATION=3 bench/dhcp/run.sh
#   BEFORE=/tmp/dhcp-before bench/dhcp/run.sh  # also Preboot built from another checkout
#
# Prints a markdown table and writes it to docs/benchmarks-dhcp.md.
# Needs root, perfdhcp (kea-admin), dnsmasq (dnsmasq-base), iproute2, Go.
set -euo pipefail

RATES=${RATES:-"1000 5000 10000 15000 20000"}
DURATION=${DURATION:-5}     # seconds per rate
CLIENTS=${CLIENTS:-10000}   # distinct MACs (perfdhcp -R)
REPEAT=${REPEAT:-3}         # interleaved rounds; per rate the best run (fewest drops, then lowest avg delay) is reported
# perfdhcp runs at a higher priority than the servers (same for both), so that
# on a small shared host the load generator, not the server under test, keeps
# up with receiving; GEN_NICE=0 to turn off.
GEN_NICE=${GEN_NICE:--5}
OUT=${OUT:-docs/benchmarks-dhcp.md}
BEFORE=${BEFORE:-}          # a checkout of another commit: its proxydhcp runs alongside as "preboot proxydhcp (before)"
VENDOR="PXEClient:Arch:00000:UNDI:002001"

cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
for b in perfdhcp dnsmasq ip go; do
	command -v "$b" >/dev/null || { echo "run.sh: $b not found" >&2; exit 1; }
done

ID=$$
SRV=preboot-bench-dhcp-$ID-srv
CLI=preboot-bench-dhcp-$ID-cli
SIF=pbbs$ID
CIF=pbbc$ID
WORK=$(mktemp -d /tmp/preboot-bench-dhcp.XXXXXX)
SERVER_PID=

cleanup() {
	if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	ip netns del "$SRV" 2>/dev/null || true
	ip netns del "$CLI" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

go build -o "$WORK/proxyserve" ./bench/dhcp/proxyserve
if [ -n "$BEFORE" ]; then
	(cd "$BEFORE" && go build -o "$WORK/proxyserve-before" ./bench/dhcp/proxyserve)
fi

ip netns add "$SRV"
ip netns add "$CLI"
ip link add "$SIF" netns "$SRV" type veth peer name "$CIF" netns "$CLI"
ip -n "$SRV" addr add 10.215.0.1/16 dev "$SIF"
ip -n "$CLI" addr add 10.215.0.2/16 dev "$CIF"
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set "$SIF" up
ip -n "$CLI" link set "$CIF" up

HEX=$(printf '%s' "$VENDOR" | od -An -tx1 | tr -d ' \n')
# Like real PXE firmware, also send option 93 (arch 0, BIOS) and 97 (UUID):
# dnsmasq does not answer PXE DISCOVERs without them.
UUID=00$(printf 'preboot-bench-01' | od -An -tx1 | tr -d ' \n')

# udp_rcvbuf_errors NS: the UDP RcvbufErrors counter of a namespace (packets
# the kernel dropped because a socket's receive buffer was full).
udp_rcvbuf_errors() {
	ip netns exec "$1" awk '/^Udp:/ { n++; if (n == 2) print $6 }' /proc/net/snmp
}

wait_port67() {
	for _ in $(seq 1 100); do
		if ip netns exec "$SRV" ss -Huln 'sport = :67' | grep -q .; then return 0; fi
		sleep 0.1
	done
	echo "run.sh: server did not open port 67" >&2
	return 1
}

stop_server() {
	kill "$SERVER_PID"
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=
}

ROWS="$WORK/rows"
: >"$ROWS"
declare -A BEST

# measure RATE: one perfdhcp run; sets M_SENT M_RECV M_DROPS M_MIN M_AVG M_MAX M_SRVD M_CLID.
measure() {
	local rate=$1 srv0 cli0 out
	srv0=$(udp_rcvbuf_errors "$SRV")
	cli0=$(udp_rcvbuf_errors "$CLI")
	out=$(timeout $((DURATION + 30)) ip netns exec "$CLI" nice -n "$GEN_NICE" perfdhcp -4 -l "$CIF" -i -r "$rate" -R "$CLIENTS" \
		-p "$DURATION" -W 500000 -o "60,$HEX" -o 93,0000 -o "97,$UUID" 2>&1) || true
	M_SRVD=$(($(udp_rcvbuf_errors "$SRV") - srv0))
	M_CLID=$(($(udp_rcvbuf_errors "$CLI") - cli0))
	M_SENT=$(awk '/^sent packets:/ {print $3; exit}' <<<"$out")
	M_RECV=$(awk '/^received packets:/ {print $3; exit}' <<<"$out")
	M_DROPS=$(awk '/^drops:/ {print $2; exit}' <<<"$out")
	M_MIN=$(awk '/^min delay:/ {print $3; exit}' <<<"$out")
	M_AVG=$(awk '/^avg delay:/ {print $3; exit}' <<<"$out")
	M_MAX=$(awk '/^max delay:/ {print $3; exit}' <<<"$out")
	if [ -z "$M_SENT" ] || [ -z "$M_RECV" ] || [ -z "$M_DROPS" ]; then
		echo "run.sh: perfdhcp failed at $rate/s:" >&2
		echo "$out" >&2
		M_SENT=0 M_RECV=0 M_DROPS=999999999 M_MIN=- M_AVG=- M_MAX=-
	fi
}

# Every round runs each server through every rate, the servers alternating
# first from round to round, so that both see the same host conditions.
declare -A RES ALLAVG
DNSMASQ_NAME="dnsmasq $(dnsmasq --version | awk 'NR==1 {print $3}') proxy"
NAMES=("preboot proxydhcp" "$DNSMASQ_NAME")
if [ -n "$BEFORE" ]; then
	NAMES+=("preboot proxydhcp (before)")
fi

start_named() { # NAME
	if [ "$1" = "preboot proxydhcp" ]; then
		ip netns exec "$SRV" "$WORK/proxyserve" -iface "$SIF" 2>>"$WORK/proxyserve.log" &
	elif [ "$1" = "preboot proxydhcp (before)" ]; then
		ip netns exec "$SRV" "$WORK/proxyserve-before" -iface "$SIF" 2>>"$WORK/proxyserve.log" &
	else
		ip netns exec "$SRV" dnsmasq --keep-in-foreground --port=0 --conf-file=/dev/null --no-resolv --no-hosts \
			--interface="$SIF" --bind-interfaces --dhcp-range=10.215.0.0,proxy,255.255.0.0 \
			--pxe-service=x86PC,"Preboot",undionly --leasefile-ro --dhcp-leasefile=/dev/null \
			--pid-file="$WORK/dnsmasq.pid" --log-facility="$WORK/dnsmasq.log" --quiet-dhcp --user=root --group=root &
	fi
	SERVER_PID=$!
	wait_port67
}

# keep NAME RATE: keeps the run just measured if it has fewer drops than the
# best so far (ties: the lower average delay), and notes its average delay.
keep() {
	local k="$1|$2" prev
	ALLAVG[$k]="${ALLAVG[$k]:+${ALLAVG[$k]}, }$M_AVG"
	prev=${RES[$k]:-}
	if [ -n "$prev" ]; then
		local pd pa
		read -r _ _ pd pa _ <<<"$prev"
		if [ "$M_DROPS" -gt "$pd" ]; then return; fi
		if [ "$M_DROPS" = "$pd" ] && awk -v a="$M_AVG" -v b="$pa" 'BEGIN { exit !(a == "-" || (b != "-" && a + 0 >= b + 0)) }'; then return; fi
	fi
	RES[$k]="$M_SENT $M_RECV $M_DROPS $M_AVG $M_MAX $M_SRVD $M_CLID $M_MIN"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for round in $(seq 1 "$REPEAT"); do
	# Rotate the order from round to round, so that no server always goes first.
	order=()
	for i in "${!NAMES[@]}"; do
		order+=("${NAMES[$(((i + round - 1) % ${#NAMES[@]}))]}")
	done
	for name in "${order[@]}"; do
		echo "== round $round: $name" >&2
		start_named "$name"
		for rate in $RATES; do
			measure "$rate"
			echo "$name $rate/s: $M_RECV/$M_SENT, drops $M_DROPS, avg $M_AVG ms" >&2
			keep "$name" "$rate"
		done
		stop_server
	done
done
cat "$WORK/proxyserve.log" >&2

for name in "${NAMES[@]}"; do
	best=0
	for rate in $RATES; do
		read -r b_sent b_recv b_drops b_avg b_max b_srvd b_clid b_min <<<"${RES[$name|$rate]}"
		pct=$(awk -v d="$b_drops" -v s="$b_sent" 'BEGIN { if (s > 0) printf "%.2f", 100 * d / s; else print "-" }')
		offers=$(awk -v r="$b_recv" -v t="$DURATION" 'BEGIN { printf "%.0f", r / t }')
		if [ "$b_drops" = 0 ] && [ "$b_sent" -gt 0 ] && [ "$rate" -gt "$best" ]; then best=$rate; fi
		printf '| %s | %s | %s | %s | %s | %s %% | %s | %s | %s / %s / %s | %s |\n' \
			"$name" "$rate" "$b_sent" "$b_recv" "$offers" "$pct" "$b_srvd" "$b_clid" "$b_min" "$b_avg" "$b_max" "${ALLAVG[$name|$rate]}" | tee -a "$ROWS"
	done
	BEST[$name]=$best
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

{
	echo "# proxyDHCP benchmark"
	echo
	echo "Generated by \`bench/dhcp/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'): perfdhcp $(perfdhcp -v 2>&1 | awk '{print $2}') sends"
	echo "PXE DHCPDISCOVERs (option 60 \`$VENDOR\`, 93 and 97, $CLIENTS distinct MACs, \`-i\`: DISCOVER/OFFER only)"
	echo "for ${DURATION} s per rate from one network namespace to the proxy in another over a veth pair; $REPEAT interleaved rounds"
	echo "(the servers alternate going first), per rate the best run (fewest drops, then lowest average delay) is shown, with the"
	echo "average delay of every run in the last column."
	echo "Both servers answer every PXE DISCOVER with a proxy OFFER (no address) broadcast to port 68."
	echo
	echo "perfdhcp runs with \`nice -n $GEN_NICE\` (the servers at 0), so that the load generator keeps up."
	echo "Host: $(nproc) CPUs, kernel $(uname -r); load average before $LOAD_BEFORE, after $LOAD_AFTER"
	echo "(the load generator, the server and anything else running share these CPUs)."
	echo
	echo "| server | target rate /s | DISCOVERs sent | OFFERs received | OFFERs /s | drops | server rcvbuf drops | perfdhcp rcvbuf drops | min / avg / max delay ms | avg delay, every run, ms |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	cat "$ROWS"
	echo
	for k in "${!BEST[@]}"; do
		echo "- **$k**: highest target rate with zero drops: ${BEST[$k]}/s"
	done
	echo
	echo "\"drops\" are DISCOVERs perfdhcp never got an OFFER for. \"server rcvbuf drops\" counts packets the kernel"
	echo "discarded in the server namespace because the server's socket buffer was full (the server fell behind);"
	echo "\"perfdhcp rcvbuf drops\" counts OFFERs discarded on the client side because perfdhcp's own socket buffer was"
	echo "full (the load generator fell behind, it is not the server's fault)."
} >"$WORK/report.md"

cp "$WORK/report.md" "$OUT"
cat "$OUT"
