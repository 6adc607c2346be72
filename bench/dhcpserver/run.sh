#!/usr/bin/env bash
# Embedded DHCP server benchmark: perfdhcp (Kea) runs full DORA exchanges
# (DISCOVER, OFFER, REQUEST, ACK) for new clients from one network namespace
# against a DHCP server in another (veth pair, no route out). Preboot's
# dhcpserver (leases in SQLite, every ACK fsynced before it leaves) and dnsmasq with
# its lease file (rewritten and fsynced after every change) run in the same
# run, each rate against a fresh, empty lease database on the same disk.
#
#   sudo bench/dhcpserver/run.sh
#   RATES="100 500" DURATION=5 bench/dhcpserver/run.sh
#
# Prints a markdown table and writes it to docs/benchmarks-dhcp-server.md.
# Needs root, perfdhcp (kea-admin), dnsmasq (dnsmasq-base), iproute2, Go.
set -euo pipefail

RATES=${RATES:-"100 250 500 1000 2000"}
DURATION=${DURATION:-10}    # seconds per rate
CLIENTS=${CLIENTS:-60000}   # distinct MACs perfdhcp draws from (-R): nearly all new
REPEAT=${REPEAT:-2}         # runs per rate; the best (fewest drops) is reported
GEN_NICE=${GEN_NICE:--5}
OUT=${OUT:-docs/benchmarks-dhcp-server.md}

cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
for b in perfdhcp dnsmasq ip go; do
	command -v "$b" >/dev/null || { echo "run.sh: $b not found" >&2; exit 1; }
done

ID=$$
SRV=preboot-bench-dhcps-$ID-srv
CLI=preboot-bench-dhcps-$ID-cli
SIF=pbds$ID
CIF=pbdc$ID
# On disk (not tmpfs): fsync must cost what it costs.
WORK=$(mktemp -d /var/tmp/preboot-bench-dhcps.XXXXXX)
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

go build -o "$WORK/leaseserve" ./bench/dhcpserver/leaseserve

ip netns add "$SRV"
ip netns add "$CLI"
ip link add "$SIF" netns "$SRV" type veth peer name "$CIF" netns "$CLI"
ip -n "$SRV" addr add 10.216.0.1/16 dev "$SIF"
ip -n "$CLI" addr add 10.216.0.2/16 dev "$CIF" # perfdhcp sends from an address
for ns in "$SRV" "$CLI"; do ip -n "$ns" link set lo up; done
ip -n "$SRV" link set "$SIF" up
ip -n "$CLI" link set "$CIF" up
RANGE_START=10.216.1.1
RANGE_END=10.216.255.254

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

# start_server NAME: a fresh server with an empty lease database.
start_server() {
	rm -f "$WORK"/leases.*
	case $1 in
	preboot)
		ip netns exec "$SRV" "$WORK/leaseserve" -iface "$SIF" -sqlite "$WORK/leases.db" \
			-range "$RANGE_START-$RANGE_END" -subnet 10.216.0.0/16 2>>"$WORK/server.log" &
		;;
	dnsmasq)
		: >"$WORK/leases.dnsmasq"
		ip netns exec "$SRV" dnsmasq --keep-in-foreground --port=0 --conf-file=/dev/null --no-resolv --no-hosts \
			--interface="$SIF" --bind-interfaces --dhcp-range="$RANGE_START,$RANGE_END,255.255.0.0,1h" \
			--dhcp-authoritative --no-ping --dhcp-lease-max=70000 --dhcp-leasefile="$WORK/leases.dnsmasq" \
			--pid-file="$WORK/dnsmasq.pid" --log-facility="$WORK/dnsmasq.log" --quiet-dhcp --user=root --group=root &
		;;
	esac
	SERVER_PID=$!
	wait_port67
}

# leases_stored NAME: how many leases the server's database holds.
leases_stored() {
	case $1 in
	preboot) go run ./bench/dhcpserver/leasecount "$WORK/leases.db" ;;
	dnsmasq) wc -l <"$WORK/leases.dnsmasq" ;;
	esac
}

ROWS="$WORK/rows"
: >"$ROWS"
declare -A BEST

# stat BLOCK FIELD OUT: a field of one exchange's statistics block.
stat() {
	awk -v blk="$1" -v f="$2" '
		/^\*\*\*Statistics for:/ { cur = ($0 ~ blk) }
		cur && index($0, f ":") == 1 { sub(f ":[ ]*", ""); print $1; exit }' <<<"$3"
}

measure() { # NAME RATE
	local name=$1 rate=$2 srv0 cli0 out
	start_server "$name"
	srv0=$(udp_rcvbuf_errors "$SRV")
	cli0=$(udp_rcvbuf_errors "$CLI")
	out=$(timeout $((DURATION + 30)) ip netns exec "$CLI" nice -n "$GEN_NICE" perfdhcp -4 -l "$CIF" -r "$rate" -R "$CLIENTS" \
		-p "$DURATION" -W 2000000 2>&1) || true
	M_SRVD=$(($(udp_rcvbuf_errors "$SRV") - srv0))
	M_CLID=$(($(udp_rcvbuf_errors "$CLI") - cli0))
	stop_server
	M_STORED=$(leases_stored "$name" | tr -d ' ')
	M_DSENT=$(stat DISCOVER-OFFER "sent packets" "$out")
	M_DDROP=$(stat DISCOVER-OFFER "drops" "$out")
	M_RSENT=$(stat REQUEST-ACK "sent packets" "$out")
	M_ACKS=$(stat REQUEST-ACK "received packets" "$out")
	M_RDROP=$(stat REQUEST-ACK "drops" "$out")
	M_DAVG=$(stat DISCOVER-OFFER "avg delay" "$out")
	M_RAVG=$(stat REQUEST-ACK "avg delay" "$out")
	M_RMAX=$(stat REQUEST-ACK "max delay" "$out")
	M_NONU=$(stat REQUEST-ACK "non unique addresses" "$out")
	if [ -z "$M_DSENT" ] || [ -z "$M_ACKS" ]; then
		echo "run.sh: perfdhcp failed ($name at $rate/s):" >&2
		echo "$out" >&2
		M_DSENT=0 M_DDROP=999999999 M_RSENT=0 M_ACKS=0 M_RDROP=999999999 M_DAVG=- M_RAVG=- M_RMAX=- M_NONU=-
	fi
	M_DROPS=$((M_DDROP + M_RDROP))
}

run_rates() { # NAME LABEL
	local name=$1 label=$2 best=0
	for rate in $RATES; do
		local b=() bd=999999999
		for _ in $(seq 1 "$REPEAT"); do
			measure "$name" "$rate"
			if [ "$M_DROPS" -le "$bd" ]; then
				bd=$M_DROPS
				b=("$M_DSENT" "$M_DDROP" "$M_ACKS" "$M_RDROP" "$M_DAVG" "$M_RAVG" "$M_RMAX" "$M_NONU" "$M_SRVD" "$M_CLID" "$M_STORED")
			fi
			[ "$M_DROPS" = 0 ] && break
		done
		local acks_s pct
		acks_s=$(awk -v r="${b[2]}" -v t="$DURATION" 'BEGIN { printf "%.0f", r / t }')
		pct=$(awk -v d="$bd" -v s="${b[0]}" 'BEGIN { if (s > 0) printf "%.2f", 100 * d / s; else print "-" }')
		if [ "$bd" = 0 ] && [ "${b[0]}" -gt 0 ] && [ "$rate" -gt "$best" ]; then best=$rate; fi
		printf '| %s | %s | %s | %s | %s | %s / %s (%s %%) | %s / %s / %s | %s | %s | %s / %s |\n' \
			"$label" "$rate" "${b[0]}" "${b[2]}" "$acks_s" "${b[1]}" "${b[3]}" "$pct" "${b[4]}" "${b[5]}" "${b[6]}" \
			"${b[7]}" "${b[10]}" "${b[8]}" "${b[9]}" | tee -a "$ROWS"
		echo "$label $rate ${b[2]}" >>"$WORK/acks"
	done
	BEST[$label]=$best
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
DNSMASQ="dnsmasq $(dnsmasq --version | awk 'NR==1 {print $3}')"
echo "== preboot dhcpserver (SQLite)" >&2
run_rates preboot "preboot dhcpserver (SQLite)"
echo "== $DNSMASQ" >&2
run_rates dnsmasq "$DNSMASQ (lease file)"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
FS=$(df -T "$WORK" | awk 'NR==2 {print $2 " on " $1}')

{
	echo "# Embedded DHCP server benchmark"
	echo
	echo "Generated by \`bench/dhcpserver/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'): perfdhcp $(perfdhcp -v 2>&1 | awk '{print $2}') runs"
	echo "DORA exchanges (DISCOVER, OFFER, REQUEST, ACK) at a target rate of new clients per second ($CLIENTS distinct MACs"
	echo "drawn at random: nearly every exchange is a new client) for ${DURATION} s, from one network namespace to the"
	echo "server in another over a veth pair. Every rate starts the server on an empty lease database (best of up to"
	echo "$REPEAT runs: fewest drops). Lease databases on $FS."
	echo
	echo "- **Preboot** (\`bench/dhcpserver/leaseserve\`: package dhcpserver, the code \`preboot serve --dhcp-range\` runs):"
	echo "  every OFFER and every ACK is one committed SQLite transaction, and an ACK leaves only once the WAL holding"
	echo "  it is fsynced (a group fsync shared by the leases committed meanwhile), so an acknowledged lease survives"
	echo "  a crash or a power cut. An OFFER's reservation does not wait for a sync (the next ACK's sync writes it)."
	echo "- **dnsmasq**: after every packet that changed a lease it rewrites its whole lease file and fsyncs it"
	echo "  (\`lease_update_file\`); it keeps leases in memory and checks them there. Run with \`--no-ping\` (no ICMP"
	echo "  check before an offer, as Preboot) and \`--dhcp-authoritative\`."
	echo
	echo "perfdhcp runs with \`nice -n $GEN_NICE\` (the servers at 0). Host: $(nproc) CPUs, kernel $(uname -r); load average"
	echo "before $LOAD_BEFORE, after $LOAD_AFTER (the load generator, the server and anything else running share these CPUs)."
	echo
	echo "| server | target /s | DISCOVERs | ACKs | ACKs /s | drops DO / RA (% of DISCOVERs) | avg DO / avg RA / max RA delay ms | non-unique addresses | leases stored | rcvbuf drops server / perfdhcp |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	cat "$ROWS"
	echo
	for k in "${!BEST[@]}"; do
		echo "- **$k**: highest target rate with zero drops: ${BEST[$k]}/s"
	done
	echo
	echo "Ratio of ACKs per second, Preboot / dnsmasq, per target rate:"
	echo
	awk '{ rate = $(NF-1); acks = $NF; if ($1 == "preboot") p[rate] = acks; else d[rate] = acks; rates[rate] = 1 }
		END { for (r in rates) if (d[r] > 0) printf "- %s/s: %.2f\n", r, p[r] / d[r] }' "$WORK/acks" | sort -k2 -n
	echo
	echo "\"drops\" are exchanges perfdhcp never got the answer to (DO: no OFFER; RA: no ACK). \"leases stored\" is what"
	echo "the lease database holds when the server has stopped: Preboot's rows include the reservations of offers"
	echo "never requested (perfdhcp gave up on them), dnsmasq's lease file only acknowledged leases. \"non-unique"
	echo "addresses\" counts addresses perfdhcp saw given to two clients (must be 0). \"rcvbuf drops\" are packets the"
	echo "kernel discarded because the server's (or perfdhcp's) socket buffer was full: the server fell behind."
} >"$WORK/report.md"

cp "$WORK/report.md" "$OUT"
cat "$OUT"
