#!/usr/bin/env bash
# Imaging benchmark: Preboot's capture/restore against Debian's partclone (+ zstd -3) and a raw dd
# copy, side by side in one run, on a 3 GiB disk image (MBR, one ext4 partition filled to about
# 50 % with a seeded mix of random, text, zero-filled and many small files). Not part of `go test`.
#
#   sudo bench/imaging/run.sh               # 5 rounds (about 6 minutes)
#   ROUNDS=1 sudo bench/imaging/run.sh      # quicker
#
# Env: ROUNDS (5), DISK_MIB (3072), DATA_SIZE (1500MiB of file content), SEED (1),
#      VERIFY_ALL (0: fsck + checksum the restores of round 1 only; 1: every round),
#      PROFILE (0; 1: one extra profiled Preboot run with bench/imaging/agentprof, CPU profiles of
#      agent and server in bench/.cache/imaging-prof/), OUT_MD (docs/benchmarks-imaging.md).
#
# Needs root (network namespace, loop devices, mount), go, partclone, zstd, e2fsprogs, fdisk
# (sfdisk), util-linux, iproute2, curl, /usr/bin/time (Debian package "time").
#
# All files live on tmpfs (/dev/shm, or a tmpfs this script mounts when /dev/shm is too small) so
# disk speed does not dominate. The Preboot server runs in a network namespace this script creates
# (preboot-bench-img-PID, loopback only, no route out) with proxyDHCP and TFTP off; the agent runs
# in the same namespace and talks to it over 127.0.0.1. Everything (server, loop devices, mounts,
# the namespace, the tmpfs, temp files) is removed on exit by the trap.
#
# Output: a markdown table on stdout, also written to OUT_MD (text after the "<!-- notes -->"
# line of an existing OUT_MD is kept).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT_MD=${OUT_MD:-$REPO/docs/benchmarks-imaging.md}
ROUNDS=${ROUNDS:-5}
DISK_MIB=${DISK_MIB:-3072}
DATA_SIZE=${DATA_SIZE:-1500MiB}
SEED=${SEED:-1}
VERIFY_ALL=${VERIFY_ALL:-0}
PROFILE=${PROFILE:-0}
NS=preboot-bench-img-$$
PORT=8080
URL=http://127.0.0.1:$PORT
PART_OFF=$((1 << 20))                          # partition starts at 1 MiB (sector 2048)
DISK_BYTES=$((DISK_MIB << 20))
PART_BYTES=$((DISK_BYTES - PART_OFF))
TCK=$(getconf CLK_TCK)

[[ $(id -u) -eq 0 ]] || { echo "run as root (network namespace, loop devices, mount)" >&2; exit 1; }
for tool in go partclone.ext4 zstd mke2fs e2fsck dumpe2fs e2image sfdisk losetup ip curl sha256sum fallocate; do
	command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install partclone zstd e2fsprogs fdisk util-linux iproute2 curl)" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "missing /usr/bin/time (apt-get install time)" >&2; exit 1; }

TMPFS_MNT=""
SRV_PID=""
LOOPS=()
MNTS=()
WORK=""

cleanup() {
	set +e
	if [[ -n $SRV_PID ]]; then kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null; fi
	local m l
	for m in "${MNTS[@]}"; do mountpoint -q "$m" && umount "$m"; done
	for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
	ip netns del "$NS" 2>/dev/null
	[[ -n $WORK ]] && rm -rf "$WORK"
	if [[ -n $TMPFS_MNT ]]; then umount "$TMPFS_MNT"; rmdir "$TMPFS_MNT"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "# $(date +%T) $*" >&2; }

# --- workspace on tmpfs ------------------------------------------------------------------------
# Peak use: source disk + partition image (fully allocated), generated tree, repository, one target.
NEED_MIB=$((DISK_MIB * 3 + 4096))
AVAIL_MIB=$(df -m --output=avail /dev/shm 2>/dev/null | tail -1 | tr -d ' ' || echo 0)
if [[ $(stat -f -c %T /dev/shm 2>/dev/null) == tmpfs && ${AVAIL_MIB:-0} -ge $NEED_MIB ]]; then
	WORK=$(mktemp -d /dev/shm/preboot-bench-img.XXXXXX)
else
	TMPFS_MNT=$(mktemp -d /tmp/preboot-bench-img-tmpfs.XXXXXX)
	mount -t tmpfs -o size=${NEED_MIB}m preboot-bench-img "$TMPFS_MNT"
	WORK=$TMPFS_MNT/work
	mkdir "$WORK"
fi
log "workspace $WORK"
BIN=$WORK/bin
mkdir -p "$BIN" "$WORK/mnt"

log "building preboot and the helpers"
(cd "$REPO" && CGO_ENABLED=0 go build -o "$BIN/preboot" ./cmd/preboot &&
	go build -o "$BIN/gendata" ./bench/imaging/gendata &&
	{ [[ $PROFILE != 1 ]] || CGO_ENABLED=0 go build -o "$BIN/agentprof" ./bench/imaging/agentprof; })

# --- source disk ---------------------------------------------------------------------------------
log "generating $DATA_SIZE of files (seed $SEED)"
"$BIN/gendata" -dir "$WORK/src" -size "$DATA_SIZE" -seed "$SEED" >"$WORK/gendata.txt"
(cd "$WORK/src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >"$WORK/src.sums"
NFILES=$(wc -l <"$WORK/src.sums")

log "mke2fs + loop-mount + cp -a into a ${PART_BYTES}-byte partition image"
PART=$WORK/part.img
DISK=$WORK/disk.img
# An empty filesystem, filled through the kernel (cp writes the zero-filled files' blocks; mke2fs -d
# would leave them as holes). Fixed UUID and hash seed; inode tables and journal initialised now,
# so no lazy-init thread writes to the image later.
fallocate -l "$PART_BYTES" "$PART"   # a real partition has no holes
E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 -U 6f1a2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b \
	-E hash_seed=0b1c2d3e-4f50-4162-8374-95a6b7c8d9e0,lazy_itable_init=0,lazy_journal_init=0,nodiscard \
	"$PART" >/dev/null
LP=$(losetup -f --show "$PART")
LOOPS+=("$LP")
mount -o nodiscard "$LP" "$WORK/mnt"
MNTS+=("$WORK/mnt")
cp -a "$WORK/src/." "$WORK/mnt/"
umount "$WORK/mnt"
losetup -d "$LP"
e2fsck -fp "$PART" >/dev/null || [[ $? -eq 1 ]]   # exact free-block counts in the superblock (the kernel updates them lazily)
fallocate -l "$PART_BYTES" "$PART"                 # fill any holes mke2fs punched: a real partition has none
rm -rf "$WORK/src"
fallocate -l "$DISK_BYTES" "$DISK"
printf 'label: dos\nlabel-id: 0x5052424f\nstart=2048, type=83\n' | sfdisk -q "$DISK"
dd if="$PART" of="$DISK" bs=4M seek="$PART_OFF" oflag=seek_bytes conv=notrunc status=none
sfdisk -d "$DISK" | sed 1,/^$/d | sed 's/^[^:]*://' >"$WORK/table.txt"

BS=$(dumpe2fs -h "$PART" 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /,"",$2); print $2}')
BC=$(dumpe2fs -h "$PART" 2>/dev/null | awk -F: '/^Block count/ {gsub(/ /,"",$2); print $2}')
FB=$(dumpe2fs -h "$PART" 2>/dev/null | awk -F: '/^Free blocks/ {gsub(/ /,"",$2); print $2}')
USED=$(((BC - FB) * BS))
log "ext4: $BC blocks of $BS, $((BC - FB)) used = $USED bytes ($((100 * USED / PART_BYTES)) %), $NFILES files"

# --- server in its own network namespace -------------------------------------------------------------
ip netns add "$NS"
ip -n "$NS" link set lo up
inns() { ip netns exec "$NS" "$@"; }

start_server() { # $1 = data dir
	mkdir -p "$1"
	# Plain HTTP (--tls-listen ""), as measured before TLS existed; the agent uses an admin
	# token written straight into the database (loopback is not trusted).
	ip netns exec "$NS" "$BIN/preboot" serve --data-dir "$1" --proxydhcp=false --tftp=false --copy-debian-files=false \
		--http-listen 127.0.0.1:$PORT --tls-listen "" --log-format json --log-level warn >>"$WORK/server.log" 2>&1 &
	SRV_PID=$!
	local i
	for i in $(seq 100); do
		if inns curl -sf -o /dev/null "$URL/healthz"; then
			PREBOOT_TOKEN=$("$BIN/preboot" token create "bench-$RANDOM" --local --data-dir "$1" 2>/dev/null)
			export PREBOOT_TOKEN
			return 0
		fi
		kill -0 "$SRV_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; echo "server died" >&2; exit 1; }
		sleep 0.1
	done
	echo "server did not come up" >&2
	exit 1
}
stop_server() {
	[[ -n $SRV_PID ]] || return 0
	kill "$SRV_PID" 2>/dev/null || true
	wait "$SRV_PID" 2>/dev/null || true
	SRV_PID=""
}
srv_ticks() { # utime+stime of the server process (all threads), in clock ticks
	[[ -n $SRV_PID ]] || { echo 0; return; }
	awk '{print $14 + $15}' "/proc/$SRV_PID/stat" 2>/dev/null || echo 0
}
bytes_on_disk() { du -s -B1 "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }

# --- measurement ---------------------------------------------------------------------------------
RES=$WORK/results.tsv   # round op wall user sys server_cpu size
: >"$RES"
timed() { # round op size_cmd -- command...; records wall, user, sys (process tree) and server CPU
	local round=$1 op=$2 t0 t1
	shift 2
	t0=$(srv_ticks)
	/usr/bin/time -f '%e %U %S' -o "$WORK/time.out" "$@" >>"$WORK/cmd.log" 2>&1 ||
		{ echo "FAILED: $op: $*" >&2; tail -20 "$WORK/cmd.log" >&2; exit 1; }
	t1=$(srv_ticks)
	read -r w u s <"$WORK/time.out"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$op" "$w" "$u" "$s" "$(awk -v a="$t0" -v b="$t1" -v t="$TCK" 'BEGIN {printf "%.2f", (b - a) / t}')" >>"$RES"
	log "round $round $op: wall ${w}s user ${u}s sys ${s}s"
}
record_size() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/sizes.tsv"; }
: >"$WORK/sizes.tsv"

verify_part() { # $1 label, $2 file, $3 byte offset of the partition in it
	local lp sums
	lp=$(losetup -r -f --show -o "$3" --sizelimit "$PART_BYTES" "$2")
	LOOPS+=("$lp")
	e2fsck -fn "$lp" >"$WORK/fsck.out" 2>&1 || { cat "$WORK/fsck.out" >&2; echo "VERIFY $1: e2fsck failed" >&2; exit 1; }
	mount -o ro,noload "$lp" "$WORK/mnt"
	MNTS+=("$WORK/mnt")
	sums=$(cd "$WORK/mnt" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
	umount "$WORK/mnt"
	losetup -d "$lp"
	if ! cmp -s <(echo "$sums") "$WORK/src.sums"; then
		diff <(echo "$sums") "$WORK/src.sums" | head >&2
		echo "VERIFY $1: file checksums differ" >&2
		exit 1
	fi
	log "verified $1: e2fsck -fn clean, $NFILES file checksums match"
	echo "$1" >>"$WORK/verified.txt"
}
verify_table() { # $1 label, $2 disk file
	if ! cmp -s <(sfdisk -d "$2" | sed 1,/^$/d | sed 's/^[^:]*://') "$WORK/table.txt"; then
		echo "VERIFY $1: partition table differs" >&2
		exit 1
	fi
}
: >"$WORK/verified.txt"


# A blank target disk: a zero-filled, fully allocated file. Like a real disk it has every block, so
# no timed run pays for tmpfs page allocation (which on this VM varies 1-5x from run to run).
blank() { rm -f "$1"; fallocate -l "$2" "$1"; }

AG=(ip netns exec "$NS" "$BIN/preboot" agent)

run_preboot() { # $1 round
	local r=$1 data=$WORK/srv-$1 tgt=$WORK/target.img before after
	start_server "$data"
	before=$(bytes_on_disk "$data/images")
	timed "$r" pb_capture "${AG[@]}" capture --device "$DISK" --image bench --server "$URL" -q
	after=$(bytes_on_disk "$data/images")
	record_size "$r" pb_capture $((after - before))

	blank "$tgt" "$DISK_BYTES"
	timed "$r" pb_restore_blank_nodelta "${AG[@]}" restore --device "$tgt" --image bench --no-delta --server "$URL" -q
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_table "preboot restore (blank)" "$tgt"; verify_part "preboot restore (blank, --no-delta)" "$tgt" "$PART_OFF"; fi

	blank "$tgt" "$DISK_BYTES"
	timed "$r" pb_restore_blank_delta "${AG[@]}" restore --device "$tgt" --image bench --server "$URL" -q

	before=$(bytes_on_disk "$data/images")
	timed "$r" pb_recapture "${AG[@]}" capture --device "$DISK" --image bench --server "$URL" -q
	after=$(bytes_on_disk "$data/images")
	record_size "$r" pb_recapture $((after - before))

	rm -f "$tgt"; cp --sparse=never "$DISK" "$tgt"
	timed "$r" pb_restore_delta "${AG[@]}" restore --device "$tgt" --image bench --server "$URL" -q
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_table "preboot restore (delta)" "$tgt"; verify_part "preboot delta restore (identical disk)" "$tgt" "$PART_OFF"; fi
	rm -f "$tgt"
	stop_server
	rm -rf "$data"
}

run_partclone() { # $1 round
	local r=$1 img=$WORK/pc.img.zst tgt=$WORK/pc-target.img
	rm -f "$img"
	timed "$r" pc_capture bash -c "partclone.ext4 -q -L '$WORK/partclone.log' -c -s '$PART' -o - | zstd -3 -T0 -q > '$img'"
	record_size "$r" pc_capture "$(bytes_on_disk "$img")"
	blank "$tgt" "$PART_BYTES"   # -O: restore into this existing blank file
	timed "$r" pc_restore bash -c "zstd -dc -q '$img' | partclone.ext4 -q -L '$WORK/partclone.log' -r -s - -O '$tgt'"
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_part "partclone restore" "$tgt" 0; fi
	rm -f "$tgt" "$img"
}

run_raw() { # $1 round
	local r=$1 tgt=$WORK/raw-target.img
	blank "$tgt" "$PART_BYTES"
	timed "$r" dd_partition dd if="$PART" of="$tgt" bs=4M conv=notrunc status=none
	blank "$tgt" "$PART_BYTES"
	timed "$r" e2image_used e2image -ra "$PART" "$tgt"
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_part "e2image -ra copy" "$tgt" 0; fi
	rm -f "$tgt"
}

for r in $(seq "$ROUNDS"); do
	# Rotate the order so no tool always runs first (or right after another's cleanup).
	case $((r % 3)) in
	1) run_preboot "$r"; run_partclone "$r"; run_raw "$r" ;;
	2) run_raw "$r"; run_preboot "$r"; run_partclone "$r" ;;
	0) run_partclone "$r"; run_raw "$r"; run_preboot "$r" ;;
	esac
done

if [[ $PROFILE == 1 ]]; then
	PROF=$REPO/bench/.cache/imaging-prof
	mkdir -p "$PROF"
	log "profiling one Preboot round into $PROF"
	data=$WORK/srv-prof
	mkdir -p "$data"
	ip netns exec "$NS" env PREBOOT_BENCH_CPUPROFILE="$PROF/server-capture.pprof" "$BIN/agentprof" serve -data-dir "$data" \
		-listen 127.0.0.1:$PORT >>"$WORK/server.log" 2>&1 &
	SRV_PID=$!
	for i in $(seq 100); do inns curl -sf -o /dev/null "$URL/api/v1/images" && break; sleep 0.1; done
	inns env PREBOOT_BENCH_CPUPROFILE="$PROF/agent-capture.pprof" "$BIN/agentprof" capture -server "$URL" -device "$DISK" -image bench
	stop_server
	ip netns exec "$NS" env PREBOOT_BENCH_CPUPROFILE="$PROF/server-restore.pprof" "$BIN/agentprof" serve -data-dir "$data" \
		-listen 127.0.0.1:$PORT >>"$WORK/server.log" 2>&1 &
	SRV_PID=$!
	for i in $(seq 100); do inns curl -sf -o /dev/null "$URL/api/v1/images" && break; sleep 0.1; done
	blank "$WORK/target.img" "$DISK_BYTES"
	inns env PREBOOT_BENCH_CPUPROFILE="$PROF/agent-restore.pprof" "$BIN/agentprof" restore -no-delta -server "$URL" -device "$WORK/target.img" -image bench
	inns env PREBOOT_BENCH_CPUPROFILE="$PROF/agent-recapture.pprof" "$BIN/agentprof" capture -server "$URL" -device "$DISK" -image bench
	stop_server
	rm -f "$WORK/target.img"
	cp "$BIN/agentprof" "$PROF/agentprof"
	log "profiles: go tool pprof -top $PROF/agentprof $PROF/agent-restore.pprof"
fi

# --- report --------------------------------------------------------------------------------------
med() { # op column (3 wall, 4 user, 5 sys, 6 server, 7 = user+sys+server)
	awk -F'\t' -v op="$1" -v c="$2" '$2 == op { v = (c == 7) ? $4 + $5 + $6 : $c; print v }' "$RES" |
		sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
msize() {
	awk -F'\t' -v op="$1" '$2 == op {print $3}' "$WORK/sizes.tsv" | sort -g |
		awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
calc() { awk "BEGIN {printf \"$1\", $2}"; }
all_runs() { awk -F'\t' -v op="$1" '$2 == op {printf "%s%s", sep, $3; sep = " / "}' "$RES"; }

W_PBC=$(med pb_capture 3); W_PBR=$(med pb_restore_blank_nodelta 3); W_PBRD=$(med pb_restore_blank_delta 3)
W_PBRC=$(med pb_recapture 3); W_PBDR=$(med pb_restore_delta 3)
W_PCC=$(med pc_capture 3); W_PCR=$(med pc_restore 3); W_DD=$(med dd_partition 3); W_E2I=$(med e2image_used 3)
S_PB=$(msize pb_capture); S_PBR=$(msize pb_recapture); S_PC=$(msize pc_capture)
RAW_SPEED=$(calc %.0f "$PART_BYTES / $W_DD")           # bytes/s
RAW_INUSE_T=$(calc %.3f "$USED / $RAW_SPEED")           # s: dd speed applied to the used bytes
mbs() { calc %.0f "$USED / $1 / 1e6"; }
mib() { calc %.1f "$1 / 1048576"; }

row() { # label op size ratio-text
	local op=$2
	printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(med "$op" 3)" "$(all_runs "$op")" \
		"$(calc %.2f "$(med "$op" 4) + $(med "$op" 5)")" "$(med "$op" 6)" "$(mbs "$(med "$op" 3)")" "$3" "$4"
}
pass() { awk "BEGIN {exit !($1)}" && echo "**yes**" || echo "**no**"; }

CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
COMMIT=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$REPO" && [[ -n $(git status --porcelain -- agent image disk fsmap cli 2>/dev/null) ]] && echo " + uncommitted changes" || true)

{
	cat <<EOF
# Imaging benchmark: Preboot vs partclone + zstd vs raw copy

Generated by \`bench/imaging/run.sh\` on $(date -u +%Y-%m-%d). ROUNDS=$ROUNDS, medians reported (all runs listed).

## Machine and versions

- CPU: $CPU_MODEL, $(nproc) cores; memory ${MEM_GIB} GiB; kernel $(uname -r); all files on tmpfs
- Preboot $COMMIT$DIRTY, $(go version | awk '{print $3}'), static build (CGO_ENABLED=0)
- $(partclone.ext4 -v 2>&1 | grep -o 'v[0-9.]*' | head -1 | sed 's/^/partclone /') (Debian $(dpkg-query -W -f '${Version}' partclone 2>/dev/null)), $(zstd -V | grep -o 'v[0-9.]*' | head -1 | sed 's/^/zstd /'), $(e2fsck -V 2>&1 | head -1 | awk '{print "e2fsprogs " $2}')

## Data set

- Disk image: $DISK_MIB MiB, MBR, one ext4 partition (type 83) from 1 MiB to the end ($PART_BYTES bytes, 4 KiB blocks)
- Filesystem made with \`mke2fs\`, loop-mounted and filled with \`cp -a\` from a tree made by \`bench/imaging/gendata -seed $SEED -size $DATA_SIZE\`:
$(sed 's/^/  - /' "$WORK/gendata.txt")
  ($NFILES files; "zero" files are written with zeros so their blocks are allocated; "sparse" is one file with holes, 1 MiB of data every 16 MiB)
- Used: $((BC - FB)) of $BC blocks = **$USED bytes ($(mib "$USED") MiB, $((100 * USED / PART_BYTES)) %)**; images fully allocated (no holes)

## Results (median wall time of $ROUNDS rounds)

Throughput is used bytes ($(mib "$USED") MiB) / wall time for every row, so rows compare directly.
CPU = user + sys of the client process tree (\`/usr/bin/time\`); server CPU = utime + stime of the
\`preboot serve\` process from /proc/PID/stat over the same interval.

| operation | wall s | wall s, all runs | CPU s | server CPU s | MB/s of used bytes | image / on disk | note |
| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |
EOF
	row "Preboot capture (empty repository)" pb_capture "$(mib "$S_PB") MiB" "repository growth"
	row "Preboot re-capture, unchanged disk" pb_recapture "$(mib "$S_PBR") MiB" "$(calc %.1f "$W_PBC / $W_PBRC")× faster than first capture"
	row "Preboot restore, blank file, \`--no-delta\`" pb_restore_blank_nodelta "" "$(calc %.0f "100 * $RAW_INUSE_T / $W_PBR") % of raw in-use copy speed"
	row "Preboot restore, blank file, default (delta)" pb_restore_blank_delta "" "reads and hashes the blank target first"
	row "Preboot restore, identical disk (delta)" pb_restore_delta "" "nothing fetched or written"
	row "partclone.ext4 -c \\| zstd -3 -T0" pc_capture "$(mib "$S_PC") MiB" "image file"
	row "zstd -dc \\| partclone.ext4 -r" pc_restore "" ""
	row "dd bs=4M, whole partition" dd_partition "" "$(calc %.0f "$RAW_SPEED / 1e6") MB/s of partition bytes"
	row "e2image -ra (copies used blocks only)" e2image_used "" "a real raw in-use copy"
	printf '| raw in-use copy (dd speed × used bytes) | %s | | | | %s | | computed, see below |\n' "$RAW_INUSE_T" "$(calc %.0f "$RAW_SPEED / 1e6")"
	cat <<EOF

"Raw sequential copy speed of the bytes in use" is the speed of \`dd bs=4M\` over the whole
partition (partition bytes / dd wall time = $(calc %.0f "$RAW_SPEED / 1e6") MB/s), applied to the used bytes: a raw
in-use copy would take used bytes / that speed = $RAW_INUSE_T s. A restore meets the target when its
wall time is at most that / 0.9.

## Targets

| target | measured | met |
| --- | --- | --- |
| restore ≥ 90 % of raw sequential copy speed of the bytes in use | $(calc %.0f "100 * $RAW_INUSE_T / $W_PBR") % ($W_PBR s vs $RAW_INUSE_T s) | $(pass "$RAW_INUSE_T / $W_PBR >= 0.9") |
| capture faster than partclone + zstd | $W_PBC s vs $W_PCC s ($(calc %.2f "$W_PCC / $W_PBC")×) | $(pass "$W_PBC < $W_PCC") |
| restore faster than partclone + zstd | $W_PBR s vs $W_PCR s ($(calc %.2f "$W_PCR / $W_PBR")×) | $(pass "$W_PBR < $W_PCR") |
| image no larger than partclone + zstd -3 | $(mib "$S_PB") MiB vs $(mib "$S_PC") MiB ($(calc %.3f "$S_PB / $S_PC")×) | $(pass "$S_PB <= $S_PC") |
| unchanged re-capture ≥ 10× faster than the first | $W_PBRC s vs $W_PBC s ($(calc %.1f "$W_PBC / $W_PBRC")×) | $(pass "$W_PBC / $W_PBRC >= 10") |

Correctness, checked in this run: $(paste -sd ';' "$WORK/verified.txt" | sed 's/;/; /g') — each passed \`e2fsck -fn\` and
matched the sha256 of all $NFILES source files (loop-mounted read-only); the Preboot restores also
reproduced the MBR partition table.

## How it was measured

- Preboot: \`preboot serve --proxydhcp=false --tftp=false --http-listen 127.0.0.1:$PORT\` in a network
  namespace made by the script (loopback only); \`preboot agent capture|restore --server http://127.0.0.1:$PORT
  --device FILE --image bench\` in the same namespace, on the **whole disk image** (table handling included).
  A fresh server and empty repository each round. Image size = growth of DATA_DIR/images (\`du -B1\`).
  "Blank file" = a zero-filled, fully allocated file of the disk's size (every target in this benchmark is one, so
  no timed run pays for tmpfs page allocation, which varies a lot on this VM); "identical disk" = a full copy of the source disk.
- partclone: \`partclone.ext4 -c -s part.img -o - | zstd -3 -T0 > img\`, restore
  \`zstd -dc img | partclone.ext4 -r -s - -O target\` (default partclone image format, CRC32 block checksums),
  on a partition image file holding the same bytes as the disk image's partition (the disk image is
  built from it). Working on the file instead of a loop device (\`losetup -P\`) spares partclone the
  loop driver's extra copy, so the comparison favours partclone if anything.
- raw: \`dd if=part.img of=blank bs=4M conv=notrunc\` of the whole partition; \`e2image -ra\` copies just the used blocks.
- Each operation is run $ROUNDS times, interleaved, with the order of the three tools rotated per round.

## Reproduce

\`\`\`
apt-get install partclone zstd time e2fsprogs fdisk
sudo bench/imaging/run.sh                  # ROUNDS=5 by default; PROFILE=1 adds CPU profiles
\`\`\`

<!-- notes -->
EOF
	if [[ -f $OUT_MD ]] && grep -q '^<!-- notes -->$' "$OUT_MD"; then
		sed '1,/^<!-- notes -->$/d' "$OUT_MD"
	fi
} >"$WORK/report.md"
cp "$WORK/report.md" "$OUT_MD"
cat "$WORK/report.md"
