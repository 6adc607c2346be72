#!/usr/bin/env bash
# Boot storm: N new UEFI PXE machines booting within T seconds (default 1,000 in 10 s), each doing
# what EDK2's PXE and then iPXE do (DHCP with the site server + the boot offer, 4011 when needed,
# TFTP of Debian's ipxe.efi, iPXE's DHCP, the script and its chain with the hardware data), against:
#
#   preboot-sqlite   one `preboot serve` (SQLite), proxyDHCP + TFTP + HTTP
#   preboot-2x-pg    two `preboot serve` on one PostgreSQL, both answering on the segment
#   classic          dnsmasq in proxy-DHCP mode with its TFTP server + busybox httpd (static script)
#
# The site's DHCP server is dnsmasq (DHCP mode, fresh leases each run) in every run. The clients
# are new devices (random MACs 02:…): on Preboot a rule registers them (group storm).
#
#   sudo bench/bootstorm/run.sh
#   N=200 SPREAD=5 RUNS="preboot-sqlite classic" bench/bootstorm/run.sh
#
# Env: N (1000, at most 2000), SPREAD (10 s), TIMEOUT (120 s per client), RUNS (all three, in this
#      order; a stack may be named more than once, e.g. for alternating runs, one row each),
#      BLKSIZE (1468), WINDOW (0: lock-step), OUT (docs/benchmarks-bootstorm.md; text after a
#      "<!-- notes -->" line of an existing OUT is kept), PERF_DIR (unset; a directory: `perf record -g`
#      of the servers during each storm goes there, one file per run, for `perf report -i`).
# Needs root, dnsmasq, busybox, iproute2, PostgreSQL (Debian's postgresql), ipxe, Go.
# Everything runs in preboot-bs-* network namespaces joined by a bridge, with no route out;
# every process is stopped by its PID, the namespaces are removed at the end.
set -euo pipefail

N=${N:-1000}
SPREAD=${SPREAD:-10}
TIMEOUT=${TIMEOUT:-120}
RUNS=${RUNS:-"preboot-sqlite preboot-2x-pg classic"}
BLKSIZE=${BLKSIZE:-1468}
WINDOW=${WINDOW:-0}
PERF_DIR=${PERF_DIR:-}

REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-$REPO/docs/benchmarks-bootstorm.md}
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }
for b in dnsmasq busybox ip go curl; do
	command -v "$b" >/dev/null || { echo "run.sh: $b not found" >&2; exit 1; }
done
[ -f /usr/lib/ipxe/ipxe.efi ] || { echo "run.sh: /usr/lib/ipxe/ipxe.efi missing: apt-get install ipxe" >&2; exit 1; }
if [ "$N" -gt 2000 ] || [ "$N" -lt 1 ]; then echo "run.sh: 1 <= N <= 2000" >&2; exit 1; fi

ID=$$
NS=preboot-bs-$ID
BR=$NS-br SITE=$NS-site SA=$NS-a SB=$NS-b CLI=$NS-cli
WORK=$(mktemp -d /tmp/preboot-bench-bootstorm.XXXXXX)
PIDS=()

stop_pid() { # PID: SIGTERM, wait (bounded), SIGKILL
	local p=$1
	kill -0 "$p" 2>/dev/null || return 0
	kill "$p" 2>/dev/null || true
	for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
}
stop_all() {
	local p
	for p in "${PIDS[@]}"; do stop_pid "$p"; done
	PIDS=()
}
PG_PID=
# The kernel's ARP table is one for all namespaces, 1,024 entries by default (gc_thresh3): a
# thousand clients, each known to the servers by its own address, overflow it ("neighbor table
# overflow!", packets dropped). Raised for the run, restored at the end; NEIGH=0 leaves it.
NEIGH=${NEIGH:-1}
NEIGH_SAVED=
if [ "$NEIGH" = 1 ]; then
	NEIGH_SAVED=$(sysctl -n net.ipv4.neigh.default.gc_thresh1 net.ipv4.neigh.default.gc_thresh2 net.ipv4.neigh.default.gc_thresh3 | tr '\n' ' ')
fi
restore_neigh() {
	[ -n "$NEIGH_SAVED" ] || return 0
	read -r t1 t2 t3 <<<"$NEIGH_SAVED"
	sysctl -qw net.ipv4.neigh.default.gc_thresh1="$t1" net.ipv4.neigh.default.gc_thresh2="$t2" net.ipv4.neigh.default.gc_thresh3="$t3" || true
}
cleanup() {
	stop_all
	[ -n "$PG_PID" ] && stop_pid "$PG_PID"
	restore_neigh
	for n in "$CLI" "$SA" "$SB" "$SITE" "$BR"; do ip netns del "$n" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== build" >&2
go build -o "$WORK/preboot" ./cmd/preboot
go build -o "$WORK/stormclient" ./bench/bootstorm/stormclient
go build -o "$WORK/pgserve" ./bench/bootstorm/pgserve

# --- the segment: a bridge in its own namespace, one veth per host --------------------------
if [ -n "$NEIGH_SAVED" ]; then
	read -r t1 t2 t3 <<<"$NEIGH_SAVED"
	sysctl -qw net.ipv4.neigh.default.gc_thresh1="$((t1 > 8192 ? t1 : 8192))" \
		net.ipv4.neigh.default.gc_thresh2="$((t2 > 16384 ? t2 : 16384))" net.ipv4.neigh.default.gc_thresh3="$((t3 > 32768 ? t3 : 32768))"
fi
ip netns add "$BR"
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
ip -n "$BR" link set lo up
host() { # NS ADDR PEERNAME
	ip netns add "$1"
	ip link add eth0 netns "$1" type veth peer name "$3" netns "$BR"
	ip -n "$BR" link set "$3" master br0 up
	ip -n "$1" link set lo up
	ip -n "$1" addr add "$2/16" dev eth0
	ip -n "$1" link set eth0 up
}
host "$SITE" 10.217.0.1 vsite
host "$CLI" 10.217.0.2 vcli
host "$SA" 10.217.0.3 va
host "$SB" 10.217.0.4 vb

# The lease pool of the site server, on the clients' interface beforehand: each simulated client
# binds its sockets to the address it leased. Four addresses per client: dnsmasq starts its
# search for a free address at a hash of the MAC, so in a nearly full pool concurrent clients
# are offered the same address and all but one get a NAK (a real site has room to spare).
POOL=$((4 * N + 100))
LAST=$(awk -v k="$POOL" 'BEGIN { printf "10.217.%d.%d", 8 + int(k / 256), k % 256 }')
awk -v n="$POOL" 'BEGIN { for (k = 1; k <= n; k++) printf "addr add 10.217.%d.%d/16 dev eth0\n", 8 + int(k / 256), k % 256 }' |
	ip -n "$CLI" -batch -

SITE_PID=
start_site() { # a fresh site DHCP server
	rm -f "$WORK/site.leases"
	ip netns exec "$SITE" dnsmasq --keep-in-foreground --port=0 --conf-file=/dev/null --no-resolv --no-hosts \
		--interface=eth0 --bind-interfaces --dhcp-range=10.217.8.1,"$LAST",255.255.0.0,1h --dhcp-authoritative \
		--no-ping --dhcp-lease-max=10000 --dhcp-leasefile="$WORK/site.leases" --quiet-dhcp \
		--log-facility="$WORK/site.log" --pid-file="$WORK/site.pid" --user=root --group=root &
	SITE_PID=$!
	PIDS+=("$SITE_PID")
}

wait_ready() { # NS URL
	for _ in $(seq 1 300); do
		if ip netns exec "$1" curl -sf -o /dev/null "$2"; then return 0; fi
		sleep 0.2
	done
	echo "run.sh: $2 not ready" >&2
	return 1
}

cpu_seconds() { # PID...: user+system CPU seconds of these processes and their children (PostgreSQL's backends, busybox httpd's, ended ones included)
	local t=0 p
	for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
		[ -r "/proc/$p/stat" ] || continue
		t=$((t + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat")))
	done
	awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }'
}

host_busy_seconds() { # CPU seconds the whole host has been busy (all CPUs; /proc/stat: user nice system irq softirq steal)
	awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat
}

start_preboot() { # NS IP DATA [store flags...]
	local ns=$1 ip=$2 data=$3
	shift 3
	mkdir -p "$data"
	ip netns exec "$ns" "$WORK/preboot" serve --data-dir "$data" --interface eth0 --server-ip "$ip" \
		--http-listen "$ip:8080" --tls-listen "$ip:8443" --log-level warn --log-format text --menu-mode never "$@" \
		2>>"$data/server.log" &
	PIDS+=("$!")
	SERVER_PIDS+=("$!")
	wait_ready "$ns" "http://$ip:8080/readyz"
	for _ in $(seq 1 100); do [ -s "$data/tftp/ipxe.efi" ] && break; sleep 0.1; done
	# A fresh server stages Debian's signed shim and GRUB in the background (apt-get download +
	# dpkg -x when they are not installed; the namespaces have no route out, so it fails and logs
	# why). A server in service did that long before a storm: wait for it (60 s at most), so its
	# CPU is not taken from the storm.
	for _ in $(seq 1 600); do
		{ [ -s "$data/tftp/shimx64.efi" ] || grep -q 'Secure Boot path' "$data/server.log"; } && break
		sleep 0.1
	done
}

storm_rule() { # DATA: the rule that registers the storm's new devices
	"$WORK/preboot" group add storm --socket "$1/admin.sock" >/dev/null
	"$WORK/preboot" rule add storm --match 'mac ^= "02"' --group storm --socket "$1/admin.sock" >/dev/null
}

ROWS="$WORK/rows"
DETAILS="$WORK/details"
: >"$ROWS"
: >"$DETAILS"
: >"$WORK/finals"
: >"$WORK/drops"

# rcvbuf_errors NS...: UDP datagrams the kernel dropped in these namespaces because a socket's
# receive buffer was full (the program reading it fell behind).
rcvbuf_errors() {
	local t=0 n
	for n in "$@"; do
		t=$((t + $(ip netns exec "$n" awk '/^Udp:/ { k++; if (k == 2) print $6 }' /proc/net/snmp)))
	done
	echo "$t"
}

storm() { # LABEL: run the clients, add a row
	local label=$1 cpu0 cpu1 out s0 a0 c0 load0 host0 host1 gen perf_pid= p
	load0=$(cut -d' ' -f1 /proc/loadavg)
	s0=$(rcvbuf_errors "$SITE") a0=$(rcvbuf_errors "$SA" "$SB") c0=$(rcvbuf_errors "$CLI")
	cpu0=$(cpu_seconds "${SERVER_PIDS[@]}")
	for p in "${SERVER_PIDS[@]}"; do echo "$p $(cpu_seconds "$p") $(cat "/proc/$p/comm" 2>/dev/null)"; done >"$WORK/cpu0"
	if [ -n "$PERF_DIR" ]; then # a CPU profile of the servers (and their threads) for the storm
		perf record -q -F 499 -g -o "$PERF_DIR/$K-$(echo "$label" | tr -c 'A-Za-z0-9\n' '-' | cut -c1-20).data" \
			-p "$(for p in "${SERVER_PIDS[@]}"; do echo "$p"; pgrep -P "$p" || true; done | paste -sd,)" 2>>"$WORK/perf.log" &
		perf_pid=$!
		PIDS+=("$perf_pid")
	fi
	host0=$(host_busy_seconds)
	echo "== $label: $N clients over ${SPREAD}s" >&2
	out=$(ip netns exec "$CLI" /usr/bin/time -f '%U %S' -o "$WORK/gen.time" "$WORK/stormclient" -iface eth0 -n "$N" \
		-spread "${SPREAD}s" -timeout "${TIMEOUT}s" -blksize "$BLKSIZE" -windowsize "$WINDOW" -name "$label")
	host1=$(host_busy_seconds)
	cpu1=$(cpu_seconds "${SERVER_PIDS[@]}")
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" 2>/dev/null || true
	fi
	while read -r p c name; do
		echo "  $name ($p): $(awk -v a="$c" -v b="$(cpu_seconds "$p")" 'BEGIN { printf "%.1f", b - a }') CPU s" >&2
	done <"$WORK/cpu0"
	gen=$(awk '{ printf "%.1f", $1 + $2 }' "$WORK/gen.time")
	echo "| $label | $(($(rcvbuf_errors "$SITE") - s0)) | $(($(rcvbuf_errors "$SA" "$SB") - a0)) | $(($(rcvbuf_errors "$CLI") - c0)) |" >>"$WORK/drops"
	echo "$out" >"$WORK/$label.json"
	echo "$out" | python3 -c '
import json, sys
s = json.load(sys.stdin)
cpu = float(sys.argv[2]) - float(sys.argv[1])
gen = float(sys.argv[4])
rest = float(sys.argv[6]) - float(sys.argv[5]) - cpu - gen
print("| %s | %d | %d | %.2f | %.2f | %.2f | %.1f | %.1f | %d / %d | %s | %.1f | %.1f |" % (s["name"], s["clients"], s["failures"],
      s["p50_s"], s["p99_s"], s["max_s"], s["total_s"], cpu, s["dhcp_retries"], s["tftp_timeouts"], sys.argv[3], gen, rest))
' "$cpu0" "$cpu1" "$load0" "$gen" "$host0" "$host1" | tee -a "$ROWS"
	echo "$out" | python3 -c '
import json, sys
s = json.load(sys.stdin)
ph = s["phases_p50_p99_s"]
print("| %s | %s | %s | %s | %s | %s |" % (s["name"], *("%.2f / %.2f" % tuple(ph[k]) for k in ("pxe_dhcp", "tftp", "ipxe_dhcp", "script")),
      "; ".join("%d× %s" % (v, k) for k, v in sorted(s.get("errors", {}).items(), key=lambda x: -x[1])[:3]) or "-"))
' | tee -a "$DETAILS"
	echo "$out" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("- %s: `%s`" % (s["name"], s.get("final_script_sample", "")))
' >>"$WORK/finals"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
K=0
for run in $RUNS; do
	K=$((K + 1)) # each run its own data directories: a stack named twice in RUNS starts afresh
	SERVER_PIDS=()
	start_site
	SERVER_PIDS+=("$SITE_PID")
	case $run in
	preboot-sqlite)
		start_preboot "$SA" 10.217.0.3 "$WORK/sqlite-a-$K"
		storm_rule "$WORK/sqlite-a-$K"
		storm "preboot (SQLite)"
		ip netns exec "$SA" curl -s http://10.217.0.3:8080/metrics | grep -E '^preboot_(boot_requests_total|devices |tftp_transfers_total)' >&2 || true
		;;
	preboot-2x-pg)
		DSN=$(mktemp "$WORK/dsn.XXXXXX")
		"$WORK/pgserve" >"$DSN" 2>"$WORK/pg.log" &
		PG_PID=$!
		for _ in $(seq 1 600); do [ -s "$DSN" ] && break; sleep 0.2; done
		[ -s "$DSN" ] || { echo "run.sh: PostgreSQL did not start:" >&2; cat "$WORK/pg.log" >&2; exit 1; }
		SERVER_PIDS+=("$(awk '/postgres pid/ { print $4 }' "$WORK/pg.log")")
		export PREBOOT_STORE_DSN
		PREBOOT_STORE_DSN=$(cat "$DSN")
		start_preboot "$SA" 10.217.0.3 "$WORK/pg-a-$K" --store-driver postgres
		start_preboot "$SB" 10.217.0.4 "$WORK/pg-b-$K" --store-driver postgres
		storm_rule "$WORK/pg-a-$K"
		storm "preboot ×2 (PostgreSQL)"
		;;
	classic)
		mkdir -p "$WORK/classic/tftp" "$WORK/classic/www"
		cp /usr/lib/ipxe/ipxe.efi "$WORK/classic/tftp/ipxe.efi"
		# iPXE gets boot.ipxe over TFTP (what dnsmasq-based setups do), chained to the web server
		# with the same hardware parameters Preboot's bootstrap script asks for.
		cat >"$WORK/classic/tftp/boot.ipxe" <<-'EOF'
			#!ipxe
			chain http://10.217.0.3:8080/boot.ipxe?mac=${mac:hexhyp}&uuid=${uuid}&serial=${serial:uristring}&manufacturer=${manufacturer:uristring}&product=${product:uristring}&asset=${asset:uristring}&arch=${buildarch}&platform=${platform} || goto failed
			exit 1
			:failed
			exit 1
		EOF
		printf '#!ipxe\necho booting the local disk\nexit 1\n' >"$WORK/classic/www/boot.ipxe"
		ip netns exec "$SA" dnsmasq --keep-in-foreground --port=0 --conf-file=/dev/null --no-resolv --no-hosts \
			--interface=eth0 --bind-interfaces --dhcp-range=10.217.0.0,proxy,255.255.0.0 \
			--dhcp-userclass=set:ipxe,iPXE \
			--pxe-service=tag:!ipxe,X86-64_EFI,"PXE",ipxe.efi --pxe-service=tag:ipxe,X86-64_EFI,"iPXE",boot.ipxe \
			--pxe-service=tag:!ipxe,BC_EFI,"PXE",ipxe.efi --pxe-service=tag:ipxe,BC_EFI,"iPXE",boot.ipxe \
			--enable-tftp --tftp-root="$WORK/classic/tftp" --tftp-max=1024 \
			--leasefile-ro --dhcp-leasefile=/dev/null --quiet-dhcp --log-facility="$WORK/classic-dnsmasq.log" \
			--pid-file="$WORK/classic.pid" --user=root --group=root &
		PIDS+=("$!")
		SERVER_PIDS+=("$!")
		ip netns exec "$SA" busybox httpd -f -p 10.217.0.3:8080 -h "$WORK/classic/www" &
		PIDS+=("$!")
		SERVER_PIDS+=("$!")
		wait_ready "$SA" "http://10.217.0.3:8080/boot.ipxe"
		storm "classic: dnsmasq $(dnsmasq --version | awk 'NR==1 {print $3}') proxy + TFTP, busybox httpd"
		;;
	*)
		echo "run.sh: unknown run $run" >&2
		exit 1
		;;
	esac
	stop_all
	if [ -n "$PG_PID" ]; then stop_pid "$PG_PID"; PG_PID=; fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

NOTES=""
if [[ -f $OUT ]] && grep -q '^<!-- notes -->' "$OUT"; then
	NOTES=$(sed -n '/^<!-- notes -->/,$p' "$OUT")
fi
{
	echo "# Boot storm benchmark"
	echo
	echo "Generated by \`bench/bootstorm/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), Preboot $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
	echo "$N new UEFI x64 PXE clients (random MACs) start evenly over ${SPREAD} s; each does EDK2's PXE DHCP (site offer + boot offer,"
	echo "REQUEST/ACK, 4011 when the boot offer names no file), TFTP of Debian's ipxe.efi ($(stat -L -c %s /usr/lib/ipxe/ipxe.efi) bytes, blksize $BLKSIZE,"
	echo "windowsize ${WINDOW}), iPXE's DHCP, and iPXE's scripts with their chain; time from the first DISCOVER to the last script."
	echo "Site DHCP server: dnsmasq (DHCP mode) in every run. A client without its script after ${TIMEOUT} s counts as failed."
	if [ -n "$NEIGH_SAVED" ]; then
		echo "The kernel's ARP table limits (gc_thresh1/2/3: $NEIGH_SAVED) were raised to 8192/16384/32768 for the run."
	else
		echo "The kernel's ARP table limits were left as they are (NEIGH=0): $(sysctl -n net.ipv4.neigh.default.gc_thresh3) entries at most."
	fi
	echo "Host: $(nproc) CPUs, kernel $(uname -r), shared with other work; load average before $LOAD_BEFORE, after $LOAD_AFTER."
	echo
	echo "| stack | clients | failures | p50 s | p99 s | max s | total s | server CPU s | DHCP retransmits / TFTP timeouts | load average (1 min) before | load generator CPU s | rest of the host CPU s |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	cat "$ROWS"
	echo
	echo "Rows are in the order the stacks ran (RUNS)."
	echo
	echo "Phases, p50 / p99 seconds (successful clients), and the most frequent errors:"
	echo
	echo "| stack | PXE DHCP | TFTP ipxe.efi | iPXE DHCP | scripts (HTTP/TFTP) | errors |"
	echo "|---|---:|---:|---:|---:|---|"
	cat "$DETAILS"
	echo
	echo "UDP datagrams the kernel dropped because a socket's receive buffer was full (its reader fell behind), by namespace:"
	echo
	echo "| stack | site DHCP server | boot server(s) | clients (the load generator) |"
	echo "|---|---:|---:|---:|"
	cat "$WORK/drops"
	echo
	echo "\"server CPU s\" adds the user+system CPU time of the servers of the run (the site's dnsmasq and PostgreSQL included);"
	echo "\"load generator CPU s\" is the simulated clients' (stormclient); \"rest of the host\" is the CPU time the whole host was"
	echo "busy during the storm (/proc/stat, both CPUs) less those two: the kernel's packet work outside these processes (softirq) and"
	echo "everything else running on the shared host. The storm's own CPU need against the host's 2 × total s shows how close to"
	echo "the host's limit a run was."
	echo
	echo "The last script each stack sent (a sample; lines joined by \" | \"):"
	echo
	cat "$WORK/finals"
	if [[ -n $NOTES ]]; then
		echo
		echo "$NOTES"
	fi
} >"$WORK/report.md"
cp "$WORK/report.md" "$OUT"
cat "$OUT"
