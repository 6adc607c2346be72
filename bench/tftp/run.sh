#!/usr/bin/env bash
# TFTP benchmark: Preboot's tftp.Server against Debian's tftpd-hpa, atftpd and dnsmasq, side by
# side in one run. Not part of `go test`.
#
#   sudo bench/tftp/run.sh            # full run (about 20 minutes)
#   ROUNDS=1 CONC=20 bench/tftp/run.sh  # quicker
#   CELLS="curl/512/1 curl/1468/1" CONC_ROUNDS=3 LOSS=0 bench/tftp/run.sh  # some cells only
#   BEFORE=/tmp/tftp-before bench/tftp/run.sh  # also Preboot built from another checkout
#                                              # ("preboot-before": a before/after in the same run)
#
# Needs root (network namespaces, nftables), curl, atftp, nftables, iproute2, dnsmasq-base, go.
# The peer servers are fetched with `apt-get download` + `dpkg -x` into bench/.cache (never
# installed: their packages would start daemons on port 69).
#
# Everything runs inside network namespaces this script creates (preboot-bench-*), with no route
# out: the loopback benchmarks in preboot-bench-lo (so dnsmasq can have port 69 to itself), the
# loss benchmark on a veth pair between preboot-bench-a (servers) and preboot-bench-b (client),
# each side dropping 2 % of incoming UDP with nftables. Every process is stopped by PID and the
# namespaces are removed on exit.
#
# Output: a markdown table on stdout, also written to docs/benchmarks-tftp.md.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=$REPO/bench/.cache
OUT_MD=${OUT_MD:-$REPO/docs/benchmarks-tftp.md}
ROUNDS=${ROUNDS:-5}         # interleaved rounds of the single-download cells (median reported)
CONC=${CONC:-100}           # concurrent downloads
LOSS_CAP=${LOSS_CAP:-120}   # seconds a peer gets for the lossy download
PREBOOT_LOSS_RUNS=${PREBOOT_LOSS_RUNS:-3}
CONC_ROUNDS=${CONC_ROUNDS:-1} # interleaved rounds of the concurrent downloads (median reported)
LOSS=${LOSS:-1}             # 0: skip the lossy-link cell
BEFORE=${BEFORE:-}          # a checkout of another commit: its Preboot runs alongside as preboot-before

NS=preboot-bench-lo
NSA=preboot-bench-a
NSB=preboot-bench-b
SERVERS=(preboot tftpd-hpa atftpd dnsmasq)
CG=/sys/fs/cgroup/cpuacct

[[ $(id -u) -eq 0 ]] || { echo "run as root (network namespaces)" >&2; exit 1; }
for tool in curl atftp nft ip go sha256sum; do
	command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
[[ -x /usr/sbin/dnsmasq ]] || { echo "missing /usr/sbin/dnsmasq (apt-get install dnsmasq-base)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/preboot-bench-tftp.XXXXXX)
chmod 755 "$WORK"
PIDS=()

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	for ns in "$NS" "$NSA" "$NSB"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	for s in "${SERVERS[@]}"; do
		[[ -d $CG/preboot-bench-$s ]] && rmdir "$CG/preboot-bench-$s" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "# $*" >&2; }

# --- peers -------------------------------------------------------------------------------------
fetch_peers() {
	mkdir -p "$CACHE"
	if [[ ! -x $CACHE/root/usr/sbin/in.tftpd || ! -x $CACHE/root/usr/sbin/atftpd || ! -e $CACHE/root/usr/lib/x86_64-linux-gnu/libwrap.so.0 ]]; then
		log "fetching tftpd-hpa, atftpd, libwrap0 into $CACHE"
		(cd "$CACHE" && { apt-get download tftpd-hpa atftpd libwrap0 >/dev/null 2>&1 ||
			{ apt-get update >/dev/null && apt-get download tftpd-hpa atftpd libwrap0 >/dev/null; }; })
		local deb
		for deb in "$CACHE"/*.deb; do dpkg -x "$deb" "$CACHE/root"; done
	fi
}
fetch_peers
export LD_LIBRARY_PATH=$CACHE/root/usr/lib/x86_64-linux-gnu
VERSIONS="tftpd-hpa $(dpkg-deb -f "$CACHE"/tftpd-hpa_*.deb Version), atftpd $(dpkg-deb -f "$CACHE"/atftpd_*.deb Version), $(/usr/sbin/dnsmasq --version | head -1 | cut -d' ' -f1-3)"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "building tftpserve"
(cd "$REPO" && go build -o "$WORK/tftpserve" ./bench/tftp/tftpserve)
if [[ -n $BEFORE ]]; then
	log "building tftpserve from $BEFORE"
	(cd "$BEFORE" && go build -o "$WORK/tftpserve-before" ./bench/tftp/tftpserve)
	SERVERS=(preboot preboot-before tftpd-hpa atftpd dnsmasq)
fi

# --- files -------------------------------------------------------------------------------------
ROOT=$WORK/root
mkdir -p "$ROOT"
chmod 755 "$ROOT"
head -c $((32 << 20)) /dev/urandom >"$ROOT/32M"
head -c $((8 << 20)) /dev/urandom >"$ROOT/8M"
chmod 644 "$ROOT"/*
SUM32=$(sha256sum <"$ROOT/32M" | cut -d' ' -f1)
SUM8=$(sha256sum <"$ROOT/8M" | cut -d' ' -f1)

# --- servers -----------------------------------------------------------------------------------
# start_server NAME NETNS ADDR PORT: starts one server, sets SPID.
start_server() {
	local name=$1 netns=$2 addr=$3 port=$4 logf=$WORK/$1.$2.log
	case $name in
	preboot) ip netns exec "$netns" "$WORK/tftpserve" -addr "$addr:$port" -root "$ROOT" >"$logf" 2>&1 & ;;
	preboot-before) ip netns exec "$netns" "$WORK/tftpserve-before" -addr "$addr:$port" -root "$ROOT" >"$logf" 2>&1 & ;;
	tftpd-hpa) ip netns exec "$netns" "$CACHE/root/usr/sbin/in.tftpd" -L -s "$ROOT" -a "$addr:$port" >"$logf" 2>&1 & ;;
	atftpd) ip netns exec "$netns" "$CACHE/root/usr/sbin/atftpd" --daemon --no-fork --port "$port" --bind-address "$addr" \
		--maxthread 300 --logfile /dev/null "$ROOT" >"$logf" 2>&1 & ;;
	dnsmasq) ip netns exec "$netns" /usr/sbin/dnsmasq -k --conf-file=/dev/null --port=0 --enable-tftp --tftp-root="$ROOT" \
		--listen-address="$addr" --bind-interfaces --tftp-max=300 --quiet-tftp --pid-file= --log-facility="$logf" >/dev/null 2>&1 & ;;
	esac
	SPID=$!
	PIDS+=("$SPID")
	local i
	for i in $(seq 50); do
		if ip netns exec "$netns" ss -Huln "sport = :$port" | grep -q .; then return 0; fi
		sleep 0.1
	done
	echo "$name did not start; log:" >&2
	cat "$logf" >&2 || true
	exit 1
}

stop_server() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

declare -A PORT=([preboot]=6901 [tftpd-hpa]=6902 [atftpd]=6903 [dnsmasq]=69 [preboot-before]=6904)
declare -A PID

# CPU time of a server and everything it forks (tftpd-hpa forks one child per transfer and lets
# the kernel reap it, so /proc/PID/stat's cutime misses them): each server runs in its own cpuacct
# cgroup when cgroup v1 cpuacct is writable, else /proc/PID/stat of the process alone is used.
TICK=$(getconf CLK_TCK)
cg_join() { # NAME PID
	[[ -w $CG ]] || return 0
	mkdir -p "$CG/preboot-bench-$1" && echo "$2" >"$CG/preboot-bench-$1/cgroup.procs"
}
cpu_ns() { # NAME PID
	if [[ -r $CG/preboot-bench-$1/cpuacct.usage ]]; then
		cat "$CG/preboot-bench-$1/cpuacct.usage"
	else
		awk -v hz="$TICK" '{ sub(/.*\) /, ""); printf "%.0f\n", ($12 + $13 + $14 + $15) * 1e9 / hz }' "/proc/$2/stat"
	fi
}

now_ns() { date +%s%N; }
mbps() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.1f", b / 1048576 / (ns / 1e9) }'; }

RESULTS=$WORK/results.tsv
: >"$RESULTS"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

# --- loopback namespace ------------------------------------------------------------------------
ip netns del "$NS" 2>/dev/null || true
ip netns add "$NS"
ip -n "$NS" link set lo up
# tftpd-hpa resolves its address with AI_ADDRCONFIG, which ignores loopback: give the namespace
# one non-loopback address on a veth pair whose both ends stay in the namespace.
ip -n "$NS" link add pbb-x type veth peer name pbb-y
ip -n "$NS" addr add 192.0.2.99/32 dev pbb-x
ip -n "$NS" link set pbb-x up
for s in "${SERVERS[@]}"; do
	start_server "$s" "$NS" 127.0.0.1 "${PORT[$s]}"
	PID[$s]=$SPID
	cg_join "$s" "$SPID"
done
log "servers: $(for s in "${SERVERS[@]}"; do printf '%s=%s ' "$s" "${PID[$s]}"; done)"

# one_download SERVER CELL: 32 MiB, prints MB/s or "fail".
one_download() {
	local s=$1 cell=$2 out=$WORK/out.32M port=${PORT[$1]} t0 t1 rc=0
	rm -f "$out"
	local kind=${cell%%/*} rest=${cell#*/}
	local blk=${rest%%/*} win=${rest#*/}
	t0=$(now_ns)
	if [[ $kind == curl ]]; then
		ip netns exec "$NS" timeout 300 curl -s -o "$out" --tftp-blksize "$blk" "tftp://127.0.0.1:$port/32M" || rc=$?
	else
		ip netns exec "$NS" timeout 300 atftp --get -r 32M -l "$out" --option "blksize $blk" --option "windowsize $win" \
			--option "tsize 0" 127.0.0.1 "$port" >/dev/null 2>&1 || rc=$?
	fi
	t1=$(now_ns)
	if [[ $rc -ne 0 || $(sha256sum <"$out" | cut -d' ' -f1) != "$SUM32" ]]; then
		echo fail
	else
		mbps $((32 << 20)) $((t1 - t0))
	fi
	rm -f "$out"
}

if [[ -n ${CELLS:-} ]]; then
	read -ra CELLS <<<"$CELLS"
else
	CELLS=(curl/512/1 curl/1468/1 curl/8192/1)
	for w in 1 16 64; do for b in 512 1468 8192; do CELLS+=("atftp/$b/$w"); done; done
fi

log "single 32 MiB downloads: ${#CELLS[@]} cells x ${#SERVERS[@]} servers x $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
	for cell in "${CELLS[@]}"; do
		# rotate the server order every round so no server always goes first
		for i in "${!SERVERS[@]}"; do
			s=${SERVERS[$(((i + r) % ${#SERVERS[@]}))]}
			v=$(one_download "$s" "$cell")
			record "$cell" "$s" "$v"
			log "round $r $cell $s: $v MB/s"
		done
	done
done

# concurrent downloads: success %, aggregate MB/s, server CPU ms per MB
log "$CONC concurrent 8 MiB downloads, $CONC_ROUNDS round(s)"
for r in $(seq "$CONC_ROUNDS"); do for i in "${!SERVERS[@]}"; do
	s=${SERVERS[$(((i + r) % ${#SERVERS[@]}))]}
	dir=$WORK/conc
	rm -rf "$dir"
	mkdir -p "$dir"
	c0=$(cpu_ns "$s" "${PID[$s]}")
	t0=$(now_ns)
	cpids=()
	for i in $(seq "$CONC"); do
		ip netns exec "$NS" timeout 300 curl -s -o "$dir/$i" --tftp-blksize 1468 "tftp://127.0.0.1:${PORT[$s]}/8M" &
		cpids+=($!)
	done
	for p in "${cpids[@]}"; do wait "$p" || true; done
	t1=$(now_ns)
	sleep 0.5 # let forked servers reap their children
	c1=$(cpu_ns "$s" "${PID[$s]}")
	ok=0
	for i in $(seq "$CONC"); do
		[[ -f $dir/$i && $(sha256sum <"$dir/$i" | cut -d' ' -f1) == "$SUM8" ]] && ok=$((ok + 1))
	done
	rm -rf "$dir"
	record conc/success "$s" "$((ok * 100 / CONC))"
	record conc/mbps "$s" "$(mbps $((ok * (8 << 20))) $((t1 - t0)))"
	if ((ok > 0)); then
		record conc/cpu "$s" "$(awk -v ns=$((c1 - c0)) -v mb=$((ok * 8)) 'BEGIN { printf "%.2f", ns / 1e6 / mb }')"
	else
		record conc/cpu "$s" "-"
	fi
	log "round $r concurrent $s: $ok/$CONC ok"
done; done

for s in "${SERVERS[@]}"; do stop_server "${PID[$s]}"; done
ip netns del "$NS"

# --- loss: 2 % UDP dropped each way --------------------------------------------------------------
[[ $LOSS == 0 ]] || {
log "lossy link: 8 MiB, blksize 1468, curl, 2 % UDP loss each way (cap ${LOSS_CAP}s)"
for ns in "$NSA" "$NSB"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$NSA" link add pbb-a type veth peer name pbb-b netns "$NSB"
ip -n "$NSA" addr add 192.0.2.1/24 dev pbb-a
ip -n "$NSB" addr add 192.0.2.2/24 dev pbb-b
ip -n "$NSA" link set pbb-a up
ip -n "$NSB" link set pbb-b up
for ns in "$NSA" "$NSB"; do
	ip netns exec "$ns" nft add table ip t
	ip netns exec "$ns" nft add chain ip t pre '{ type filter hook prerouting priority 0; }'
	ip netns exec "$ns" nft add rule ip t pre meta l4proto udp numgen random mod 1000 lt 20 drop
done

lossy_download() { # SERVER CAP -> seconds or ">CAP s" or "fail"
	local s=$1 cap=$2 out=$WORK/out.8M t0 t1 rc=0
	rm -f "$out"
	t0=$(now_ns)
	ip netns exec "$NSB" timeout "$cap" curl -s -m "$cap" -o "$out" --tftp-blksize 1468 "tftp://192.0.2.1:${PORT[$s]}/8M" || rc=$?
	t1=$(now_ns)
	if [[ $rc -eq 124 || $rc -eq 28 ]]; then
		echo ">${cap} s"
	elif [[ $rc -ne 0 || $(sha256sum <"$out" | cut -d' ' -f1) != "$SUM8" ]]; then
		echo "fail (rc $rc)"
	else
		awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f s", ns / 1e9 }'
	fi
	rm -f "$out"
}

for s in "${SERVERS[@]}"; do
	start_server "$s" "$NSA" 192.0.2.1 "${PORT[$s]}"
	runs=1
	[[ $s == preboot ]] && runs=$PREBOOT_LOSS_RUNS
	vals=()
	for i in $(seq "$runs"); do
		vals+=("$(lossy_download "$s" "$LOSS_CAP")")
		log "loss $s run $i: ${vals[-1]}"
	done
	joined=${vals[0]}
	for v in "${vals[@]:1}"; do joined+=", $v"; done
	record loss "$s" "$joined"
	stop_server "$SPID"
done
}

# --- table -------------------------------------------------------------------------------------
median() { # values on stdin; "fail" if any failed
	local v
	v=$(cat)
	if grep -q fail <<<"$v"; then echo fail; return; fi
	sort -n <<<"$v" | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
value() { awk -F'\t' -v c="$1" -v s="$2" '$1 == c && $2 == s { print $3 }' "$RESULTS"; }

label() {
	case $1 in
	curl/*) local r=${1#curl/}; echo "32 MiB lock-step, blksize ${r%/*} (curl), MB/s" ;;
	atftp/*) local r=${1#atftp/}; echo "32 MiB, blksize ${r%/*}, windowsize ${r#*/} (atftp), MB/s" ;;
	conc/success) echo "$CONC × 8 MiB concurrent (curl, blksize 1468): success %" ;;
	conc/mbps) echo "$CONC × 8 MiB concurrent: aggregate MB/s" ;;
	conc/cpu) echo "$CONC × 8 MiB concurrent: server CPU ms per MB" ;;
	loss) echo "8 MiB through 2 % UDP loss each way (curl, blksize 1468)" ;;
	esac
}

{
	echo "# TFTP benchmark"
	echo
	echo "Generated by \`bench/tftp/run.sh\` on $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)."
	echo "Peers: $VERSIONS (Debian bookworm binaries). Loopback cells run in a network namespace,"
	echo "single downloads interleaved over $ROUNDS rounds (median shown). tftpd-hpa and dnsmasq do not"
	echo "implement windowsize (RFC 7440), so their windowed cells are lock-step. Loss: veth pair between"
	echo "two namespaces, nftables dropping 2 % of UDP in each direction; peers capped at ${LOSS_CAP} s;"
	echo "Preboot run $PREBOOT_LOSS_RUNS times. Concurrent downloads: $CONC_ROUNDS interleaved round(s), median shown."
	echo "Load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg) (the host is shared)."
	echo
	printf '| test |'
	for s in "${SERVERS[@]}"; do printf ' %s |' "$s"; done
	echo
	printf '|---|'
	for s in "${SERVERS[@]}"; do printf '%s' '---|'; done
	echo
	rows=("${CELLS[@]}" conc/success conc/mbps conc/cpu)
	[[ $LOSS == 0 ]] || rows+=(loss)
	for cell in "${rows[@]}"; do
		printf '| %s |' "$(label "$cell")"
		for s in "${SERVERS[@]}"; do
			if [[ $cell == */*/* || ($cell == conc/* && $CONC_ROUNDS -gt 1) ]]; then
				printf ' %s |' "$(value "$cell" "$s" | median)"
			else
				printf ' %s |' "$(value "$cell" "$s")"
			fi
		done
		echo
	done
} >"$WORK/table.md"

cat "$WORK/table.md"
mkdir -p "$(dirname "$OUT_MD")"
cp "$WORK/table.md" "$OUT_MD"
log "written to $OUT_MD"
