#!/usr/bin/env bash
# Imaging benchmark: Preboot's capture/restore against Debian's partclone (+ zstd -3 -T0) and a raw
# copy, side by side in one run, for ext4, XFS, Btrfs and NTFS. Each filesystem is made on a 3 GiB
# disk image (MBR, one partition from 1 MiB to the end) and filled through the kernel (ntfs-3g for
# NTFS) with the same seeded tree of random, text, zero-filled and many small files. Not part of
# `go test`.
#
#   sudo bench/imaging/run.sh                        # ROUNDS=1, all four filesystems (10.5 minutes here, loaded)
#   ROUNDS=3 sudo bench/imaging/run.sh               # medians of 3 (about 25 minutes on a quiet machine)
#   FILESYSTEMS="ext4 xfs" sudo bench/imaging/run.sh # a subset
#
# Env: ROUNDS (1), FILESYSTEMS ("ext4 xfs btrfs ntfs"), DISK_MIB (3072), DATA_SIZE (1500MiB of
#      file content; XFS needs a disk of at least 300 MiB), SEED (1),
#      VERIFY_ALL (0: check + checksum the restores of round 1 only; 1: every round),
#      PROFILE (0; 1: one extra profiled Preboot run on the first filesystem with
#      bench/imaging/agentprof, CPU profiles of agent and server in bench/.cache/imaging-prof/),
#      OUT_MD (docs/benchmarks-imaging.md).
#
# Needs root (network namespace, loop devices, mount), go, partclone, zstd, e2fsprogs, xfsprogs,
# btrfs-progs, ntfs-3g, fdisk (sfdisk), util-linux, iproute2, curl, jq, /usr/bin/time (Debian "time").
#
# All files live on tmpfs (/dev/shm, or a tmpfs this script mounts when /dev/shm is too small) so
# disk speed does not dominate. The Preboot server runs in a network namespace this script creates
# (preboot-bench-img-PID, loopback only, no route out) with proxyDHCP and TFTP off; the agent runs
# in the same namespace and talks to it over 127.0.0.1. Everything (server, loop devices, mounts,
# the namespace, the tmpfs, temp files) is removed on exit by the trap.
#
# Output: markdown tables on stdout, also written to OUT_MD (text after the "<!-- notes -->"
# line of an existing OUT_MD is kept).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT_MD=${OUT_MD:-$REPO/docs/benchmarks-imaging.md}
ROUNDS=${ROUNDS:-1}
FILESYSTEMS=${FILESYSTEMS:-ext4 xfs btrfs ntfs}
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
for fs in $FILESYSTEMS; do
	case $fs in
	ext4 | xfs | btrfs | ntfs) ;;
	*) echo "FILESYSTEMS: unknown filesystem $fs (ext4 xfs btrfs ntfs)" >&2; exit 2 ;;
	esac
done
for tool in go zstd sfdisk losetup ip curl jq sha256sum fallocate \
	partclone.ext4 mke2fs e2fsck dumpe2fs e2image \
	partclone.xfs mkfs.xfs xfs_repair xfs_db \
	partclone.btrfs mkfs.btrfs btrfs \
	partclone.ntfs mkntfs ntfs-3g ntfsfix; do
	command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install partclone zstd e2fsprogs xfsprogs btrfs-progs ntfs-3g fdisk util-linux iproute2 curl jq)" >&2; exit 1; }
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
# Peak use: the generated tree, source disk + partition image (fully allocated), repository, one
# target. One filesystem at a time; its files are removed before the next one is made.
NEED_MIB=$((DISK_MIB * 3 + 6144))
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
T_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

log "building preboot and the helpers"
(cd "$REPO" && CGO_ENABLED=0 go build -o "$BIN/preboot" ./cmd/preboot &&
	go build -o "$BIN/gendata" ./bench/imaging/gendata &&
	{ [[ $PROFILE != 1 ]] || CGO_ENABLED=0 go build -o "$BIN/agentprof" ./bench/imaging/agentprof; })

# --- the data set (one tree for every filesystem) ----------------------------------------------------
log "generating $DATA_SIZE of files (seed $SEED)"
"$BIN/gendata" -dir "$WORK/src" -size "$DATA_SIZE" -seed "$SEED" >"$WORK/gendata.txt"
(cd "$WORK/src" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) >"$WORK/src.sums"
NFILES=$(wc -l <"$WORK/src.sums")

PART=$WORK/part.img
DISK=$WORK/disk.img
FS=""   # the filesystem being measured

# A UUID of this run's own: another XFS/Btrfs/ext4 with the same UUID mounted on this machine
# (tests, other benchmarks) would make the kernel refuse or confuse our mounts.
FS_UUID=$(printf '6f1a2b3c-4d5e-4f60-8a7b-%012x' "$$")

fill_mounted() { # copy the tree into $WORK/mnt through the kernel (or ntfs-3g)
	if [[ $FS == ntfs ]]; then
		# ntfs-3g without a user mapping keeps no Unix owners or modes; copy data and times.
		cp -r --preserve=timestamps "$WORK/src/." "$WORK/mnt/"
	else
		cp -a "$WORK/src/." "$WORK/mnt/"
	fi
}

# wait_unused waits (at most 60 s) until $1 is free: no process has it open (ntfs-3g may still be
# closing it after umount returns) and it can be opened exclusively, which fails while any mount
# namespace still holds the filesystem (a process of another job that entered a new mount
# namespace while ours was mounted keeps the superblock alive after our umount; its data and
# free counts reach the device only when that copy goes away).
wait_unused() {
	local i
	for i in $(seq 600); do
		if ! fuser -s "$1" 2>/dev/null && perl -MFcntl -e 'sysopen(my $f, $ARGV[0], O_RDONLY | O_EXCL) or exit 1' "$1"; then
			return 0
		fi
		sleep 0.1
	done
	echo "$1 still busy 60 s after umount" >&2
	exit 1
}

mount_rw() { # $1 device, on $WORK/mnt
	case $FS in
	ext4 | xfs) mount -o nodiscard "$1" "$WORK/mnt" ;;
	btrfs) mount -o nodiscard "$1" "$WORK/mnt" ;; # the kernel turns on discard=async for loop devices otherwise
	ntfs) ntfs-3g "$1" "$WORK/mnt" ;;
	esac
}

make_part() { # build $PART: an empty filesystem of $FS, filled from $WORK/src
	local lp
	rm -f "$PART"
	fallocate -l "$PART_BYTES" "$PART"   # a real partition has no holes
	case $FS in
	ext4)
		# Filled through the kernel (cp writes the zero-filled files' blocks; mke2fs -d would leave
		# them as holes). Fixed UUID and hash seed; inode tables and journal initialised now, so no
		# lazy-init thread writes to the image later.
		E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 -U "$FS_UUID" \
			-E hash_seed=0b1c2d3e-4f50-4162-8374-95a6b7c8d9e0,lazy_itable_init=0,lazy_journal_init=0,nodiscard \
			"$PART" >/dev/null
		;;
	xfs) mkfs.xfs -q -f -K -m uuid="$FS_UUID" -L bench "$PART" ;;
	btrfs) mkfs.btrfs -q -f -K -U "$FS_UUID" -L bench "$PART" >/dev/null ;;
	ntfs) ;; # made on the loop device below
	esac
	lp=$(losetup -f --show "$PART")
	LOOPS+=("$lp")
	# -f: no zeroing, -Q: quick; geometry as for a partition at sector 2048 (what Windows writes).
	[[ $FS == ntfs ]] && mkntfs -f -Q -q -p 2048 -S 63 -H 255 -L bench "$lp" >/dev/null 2>&1
	# Mounted in a private mount namespace that ends with the fill: no other process on this
	# shared machine (a test entering a new mount namespace meanwhile) can keep a copy of the
	# mount, and so the filesystem, alive after our umount.
	unshare -m --propagation private bash -c "$(declare -f mount_rw fill_mounted); FS=$FS WORK=$WORK; mount_rw $lp && fill_mounted && umount $WORK/mnt"
	wait_unused "$lp"
	case $FS in
	ext4) e2fsck -fp "$lp" >/dev/null || [[ $? -eq 1 ]] ;; # exact free-block counts in the superblock (the kernel updates them lazily)
	xfs) xfs_repair -n "$lp" >"$WORK/fsck.out" 2>&1 || { cat "$WORK/fsck.out" >&2; echo "xfs_repair -n of the new source failed" >&2; exit 1; } ;;
	btrfs) btrfs check --readonly "$lp" >"$WORK/fsck.out" 2>&1 || { cat "$WORK/fsck.out" >&2; echo "btrfs check --readonly of the new source failed" >&2; exit 1; } ;;
	ntfs) ntfsfix -n "$lp" >"$WORK/fsck.out" 2>&1 || { cat "$WORK/fsck.out" >&2; echo "ntfsfix -n of the new source failed" >&2; exit 1; } ;;
	esac
	losetup -d "$lp"
	fallocate -l "$PART_BYTES" "$PART"   # fill any holes mkfs punched: a real partition has none
}

make_disk() {
	local ptype=83
	[[ $FS == ntfs ]] && ptype=7
	rm -f "$DISK"
	fallocate -l "$DISK_BYTES" "$DISK"
	printf 'label: dos\nlabel-id: 0x5052424f\nstart=2048, type=%s\n' "$ptype" | sfdisk -q "$DISK"
	dd if="$PART" of="$DISK" bs=4M seek="$PART_OFF" oflag=seek_bytes conv=notrunc status=none
	sfdisk -d "$DISK" | sed 1,/^$/d | sed 's/^[^:]*://' >"$WORK/table.txt"
}

native_used() { # one line describing the filesystem's own count of bytes in use
	local bs bc fb
	case $FS in
	ext4)
		bs=$(dumpe2fs -h "$PART" 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /,"",$2); print $2}')
		bc=$(dumpe2fs -h "$PART" 2>/dev/null | awk -F: '/^Block count/ {gsub(/ /,"",$2); print $2}')
		fb=$(dumpe2fs -h "$PART" 2>/dev/null | awk -F: '/^Free blocks/ {gsub(/ /,"",$2); print $2}')
		echo "dumpe2fs: $((bc - fb)) of $bc blocks of $bs bytes used = $(((bc - fb) * bs)) bytes"
		;;
	xfs)
		read -r bc fb bs < <(xfs_db -r -c 'sb 0' -c 'print dblocks fdblocks blocksize' "$PART" | awk '{printf "%s ", $3} END {print ""}')
		echo "xfs_db: dblocks $bc − fdblocks $fb = $((bc - fb)) blocks of $bs bytes = $(((bc - fb) * bs)) bytes (the internal log counts as used)"
		;;
	btrfs)
		btrfs inspect-internal dump-super "$PART" | awk '$1 == "bytes_used" {u = $2} $1 == "dev_item.bytes_used" {a = $2}
			END {printf "dump-super: bytes_used %s (data + metadata in use, metadata counted once though it is stored DUP); chunks allocated on the device (dev_item.bytes_used) %s\n", u, a}'
		;;
	ntfs) echo "ntfs: see partclone's count (from \$Bitmap)" ;;
	esac
}

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
# Per filesystem: $WORK/$FS/results.tsv (round op wall user sys server_cpu), sizes.tsv, verified.txt.
timed() { # round op -- command...; records wall, user, sys (process tree) and server CPU
	local round=$1 op=$2 t0 t1
	shift 2
	t0=$(srv_ticks)
	/usr/bin/time -f '%e %U %S' -o "$WORK/time.out" "$@" >>"$WORK/cmd.log" 2>&1 ||
		{ echo "FAILED: $FS $op: $*" >&2; tail -20 "$WORK/cmd.log" >&2; exit 1; }
	t1=$(srv_ticks)
	read -r w u s <"$WORK/time.out"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$op" "$w" "$u" "$s" "$(awk -v a="$t0" -v b="$t1" -v t="$TCK" 'BEGIN {printf "%.2f", (b - a) / t}')" >>"$WORK/$FS/results.tsv"
	log "$FS round $round $op: wall ${w}s user ${u}s sys ${s}s"
}
record_size() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/$FS/sizes.tsv"; }

fs_check() { # $1 device: the filesystem's own read-only check
	case $FS in
	ext4) e2fsck -fn "$1" ;;
	xfs) xfs_repair -n "$1" ;;
	btrfs) btrfs check --readonly "$1" ;;
	ntfs) ntfsfix -n "$1" ;;
	esac
}
declare -A CHECK_NAME=([ext4]="e2fsck -fn" [xfs]="xfs_repair -n" [btrfs]="btrfs check --readonly" [ntfs]="ntfsfix -n")
mount_ro() { # $1 device
	case $FS in
	ext4) mount -o ro,noload "$1" "$WORK/mnt" ;;
	xfs) mount -o ro,norecovery,nouuid "$1" "$WORK/mnt" ;;
	btrfs) mount -o ro "$1" "$WORK/mnt" ;;
	ntfs) ntfs-3g -o ro "$1" "$WORK/mnt" ;;
	esac
}

verify_part() { # $1 label, $2 file, $3 byte offset of the partition in it
	local lp sums
	lp=$(losetup -r -f --show -o "$3" --sizelimit "$PART_BYTES" "$2")
	LOOPS+=("$lp")
	if ! fs_check "$lp" >"$WORK/fsck.out" 2>&1; then
		if [[ $FS == ntfs ]] && grep -q 'alternate boot sector\.\.\. BAD' "$WORK/fsck.out" &&
			[[ $(grep -c -e BAD -e FAILED -e rror "$WORK/fsck.out") -le 2 ]]; then
			# The backup boot sector (the partition's last sector) lies outside the volume's
			# clusters; a copy of the used clusters alone leaves it blank. Reported, not fatal.
			log "WARNING $FS $1: ntfsfix -n: alternate boot sector BAD"
			echo "$1: \`ntfsfix -n\` reports the alternate (backup) boot sector, the partition's last sector, as BAD (not copied)" >>"$WORK/$FS/issues.txt"
		else
			cat "$WORK/fsck.out" >&2
			echo "VERIFY $FS $1: ${CHECK_NAME[$FS]} failed" >&2
			exit 1
		fi
	fi
	# In a private mount namespace, as for the fill (see make_part).
	sums=$(unshare -m --propagation private bash -c "$(declare -f mount_ro); FS=$FS WORK=$WORK; mount_ro $lp && cd $WORK/mnt &&
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum && cd / && umount $WORK/mnt")
	losetup -d "$lp"   # read-only: if something still holds it, the kernel detaches it later
	if ! cmp -s <(echo "$sums") "$WORK/src.sums"; then
		diff <(echo "$sums") "$WORK/src.sums" | head >&2
		echo "VERIFY $FS $1: file checksums differ" >&2
		exit 1
	fi
	log "verified $FS $1: ${CHECK_NAME[$FS]} clean, $NFILES file checksums match"
	echo "$1" >>"$WORK/$FS/verified.txt"
}
verify_table() { # $1 label, $2 disk file
	if ! cmp -s <(sfdisk -d "$2" | sed 1,/^$/d | sed 's/^[^:]*://') "$WORK/table.txt"; then
		echo "VERIFY $FS $1: partition table differs" >&2
		exit 1
	fi
}

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
	inns curl -sf -H "Authorization: Bearer $PREBOOT_TOKEN" "$URL/api/v1/images/bench?only=manifest" >"$WORK/$FS/manifest.json"

	blank "$tgt" "$DISK_BYTES"
	timed "$r" pb_restore_blank_nodelta "${AG[@]}" restore --device "$tgt" --image bench --no-delta --server "$URL" -q
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_table "preboot restore (blank)" "$tgt"; verify_part "Preboot restore (blank, --no-delta)" "$tgt" "$PART_OFF"; fi

	blank "$tgt" "$DISK_BYTES"
	local n; n=$(wc -l <"$WORK/cmd.log")
	timed "$r" pb_restore_blank_delta "${AG[@]}" restore --device "$tgt" --image bench --server "$URL" -q
	if tail -n +$((n + 1)) "$WORK/cmd.log" | grep -q 'delta check skipped'; then echo skipped; else echo "not skipped"; fi >"$WORK/$FS/delta-blank.txt"
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_table "preboot restore (blank, default)" "$tgt"; verify_part "Preboot restore (blank, default mode)" "$tgt" "$PART_OFF"; fi

	before=$(bytes_on_disk "$data/images")
	timed "$r" pb_recapture "${AG[@]}" capture --device "$DISK" --image bench --server "$URL" -q
	after=$(bytes_on_disk "$data/images")
	record_size "$r" pb_recapture $((after - before))

	rm -f "$tgt"; cp --sparse=never "$DISK" "$tgt"
	timed "$r" pb_restore_delta "${AG[@]}" restore --device "$tgt" --image bench --server "$URL" -q
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_table "preboot restore (delta)" "$tgt"; verify_part "Preboot delta restore (identical disk)" "$tgt" "$PART_OFF"; fi
	rm -f "$tgt"
	stop_server
	rm -rf "$data"
}

run_partclone() { # $1 round
	local r=$1 img=$WORK/pc.img.zst tgt=$WORK/pc-target.img
	rm -f "$img" "$WORK/$FS/partclone-capture.log"
	timed "$r" pc_capture bash -c "partclone.$FS -q -L '$WORK/$FS/partclone-capture.log' -c -s '$PART' -o - | zstd -3 -T0 -q > '$img'"
	record_size "$r" pc_capture "$(bytes_on_disk "$img")"
	blank "$tgt" "$PART_BYTES"   # -O: restore into this existing blank file
	timed "$r" pc_restore bash -c "zstd -dc -q '$img' | partclone.$FS -q -L '$WORK/partclone.log' -r -s - -O '$tgt'"
	if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_part "partclone restore" "$tgt" 0; fi
	rm -f "$tgt" "$img"
}

run_raw() { # $1 round
	local r=$1 tgt=$WORK/raw-target.img
	blank "$tgt" "$PART_BYTES"
	timed "$r" dd_partition dd if="$PART" of="$tgt" bs=4M conv=notrunc status=none
	blank "$tgt" "$PART_BYTES"
	if [[ $FS == ext4 ]]; then
		timed "$r" raw_used e2image -ra "$PART" "$tgt"
		if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_part "e2image -ra copy" "$tgt" 0; fi
	else
		# partclone's device-to-device mode: the used blocks, no image format, no compression.
		timed "$r" raw_used partclone.$FS -q -L "$WORK/partclone.log" -b -s "$PART" -O "$tgt"
		if [[ $r == 1 || $VERIFY_ALL == 1 ]]; then verify_part "partclone.$FS -b copy" "$tgt" 0; fi
	fi
	rm -f "$tgt"
}

run_profile() {
	local data=$WORK/srv-prof PROF=$REPO/bench/.cache/imaging-prof i
	mkdir -p "$PROF" "$data"
	log "profiling one Preboot round on $FS into $PROF"
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
	rm -rf "$WORK/target.img" "$data"
	cp "$BIN/agentprof" "$PROF/agentprof"
	log "profiles: go tool pprof -top $PROF/agentprof $PROF/agent-restore.pprof"
}

# --- report helpers ------------------------------------------------------------------------------
med() { # op column (3 wall, 4 user, 5 sys, 6 server, 7 = user+sys+server)
	awk -F'\t' -v op="$1" -v c="$2" '$2 == op { v = (c == 7) ? $4 + $5 + $6 : $c; print v }' "$WORK/$FS/results.tsv" |
		sort -g | awk '{a[NR] = $1} END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
msize() {
	awk -F'\t' -v op="$1" '$2 == op {print $3}' "$WORK/$FS/sizes.tsv" | sort -g |
		awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
calc() { awk "BEGIN {printf \"$1\", $2}"; }
all_runs() { awk -F'\t' -v op="$1" '$2 == op {printf "%s%s", sep, $3; sep = " / "}' "$WORK/$FS/results.tsv"; }
mib() { calc %.1f "$1 / 1048576"; }
pass() { awk "BEGIN {exit !($1)}" && echo "**yes**" || echo "**no**"; }
FSNAME() { case $1 in ext4) echo ext4 ;; xfs) echo XFS ;; btrfs) echo Btrfs ;; ntfs) echo NTFS ;; esac; }

# section writes the per-filesystem part of the report to $WORK/$FS/section.md and one line of the
# summary table to $WORK/$FS/summary.md.
section() {
	local pcl=$WORK/$FS/partclone-capture.log pc_blocks pc_bs USED PB_USED PB_FSTYPE
	pc_blocks=$(awk '/^Space in use:/ {for (i = 1; i <= NF; i++) if ($i == "Blocks") print $(i - 1)}' "$pcl" | head -1)
	pc_bs=$(awk '/^Block size:/ {print $3}' "$pcl" | head -1)
	USED=$((pc_blocks * pc_bs))
	PB_USED=$(jq '[.partitions[].used[].length] | add' "$WORK/$FS/manifest.json")
	PB_FSTYPE=$(jq -r '[.partitions[].fstype] | join(",")' "$WORK/$FS/manifest.json")
	local W_PBC W_PBR W_PBRD W_PBRC W_PBDR W_PCC W_PCR W_DD W_RU S_PB S_PBR S_PC RAW_SPEED RAW_INUSE_T
	W_PBC=$(med pb_capture 3); W_PBR=$(med pb_restore_blank_nodelta 3); W_PBRD=$(med pb_restore_blank_delta 3)
	W_PBRC=$(med pb_recapture 3); W_PBDR=$(med pb_restore_delta 3)
	W_PCC=$(med pc_capture 3); W_PCR=$(med pc_restore 3); W_DD=$(med dd_partition 3); W_RU=$(med raw_used 3)
	S_PB=$(msize pb_capture); S_PBR=$(msize pb_recapture); S_PC=$(msize pc_capture)
	RAW_SPEED=$(calc %.0f "$PART_BYTES / $W_DD")           # bytes/s
	RAW_INUSE_T=$(calc %.3f "$USED / $RAW_SPEED")           # s: dd speed applied to the used bytes
	mbs() { calc %.0f "$USED / $1 / 1e6"; }
	row() { # label op size note
		local op=$2
		printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$(med "$op" 3)" "$(all_runs "$op")" \
			"$(calc %.2f "$(med "$op" 4) + $(med "$op" 5)")" "$(med "$op" 6)" "$(mbs "$(med "$op" 3)")" "$3" "$4"
	}
	local N; N=$(FSNAME "$FS")
	local rawname="partclone.$FS -b (used blocks, device to device)"
	local rawshort="partclone.$FS -b"
	[[ $FS == ext4 ]] && rawname="e2image -ra (copies used blocks only)" && rawshort="e2image -ra"
	{
		cat <<EOS
## $N

- Partition: MBR type $([[ $FS == ntfs ]] && echo 07 || echo 83), $PART_BYTES bytes from 1 MiB to the end of the $DISK_MIB MiB disk; $(case $FS in
			ext4) echo "\`mke2fs -t ext4 -b 4096\` (lazy init off), loop-mounted, filled with \`cp -a\`" ;;
			xfs) echo "\`mkfs.xfs -K\` (Debian 12 defaults: reflink, rmapbt off, 4 KiB blocks), loop-mounted, filled with \`cp -a\`" ;;
			btrfs) echo "\`mkfs.btrfs -K\` (btrfs-progs 6.2 defaults: DUP metadata, single data, free-space tree, no-holes), loop-mounted with \`nodiscard\`, filled with \`cp -a\`" ;;
			ntfs) echo "\`mkntfs -f -Q\` on the loop device, mounted with ntfs-3g (FUSE), filled with \`cp -r --preserve=timestamps\`" ;;
			esac)
- In use, partclone's count: $pc_blocks blocks of $pc_bs bytes = **$USED bytes ($(mib "$USED") MiB, $((100 * USED / PART_BYTES)) %)**; $(native_used)
- Preboot detected \`$PB_FSTYPE\` and reads **$PB_USED bytes ($(mib "$PB_USED") MiB, $(calc %.3f "$PB_USED / $USED")× partclone's count)** (the image's used extents)

Throughput is partclone's in-use bytes ($(mib "$USED") MiB) / wall time for every row.

| operation | wall s | wall s, all runs | CPU s | server CPU s | MB/s of used bytes | image / on disk | note |
| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |
EOS
		row "Preboot capture (empty repository)" pb_capture "$(mib "$S_PB") MiB" "repository growth"
		row "Preboot re-capture, unchanged disk" pb_recapture "$(mib "$S_PBR") MiB" "$(calc %.1f "$W_PBC / $W_PBRC")× faster than first capture"
		row "Preboot restore, blank file, \`--no-delta\`" pb_restore_blank_nodelta "" "$(calc %.0f "100 * $RAW_INUSE_T / $W_PBR") % of raw in-use copy speed"
		row "Preboot restore, blank file, default mode" pb_restore_blank_delta "" "$(calc %.2f "$W_PBRD / $W_PBR")× the \`--no-delta\` time; agent log: delta check $(cat "$WORK/$FS/delta-blank.txt") (blank target)"
		row "Preboot restore, identical disk (delta)" pb_restore_delta "" "nothing fetched or written"
		row "partclone.$FS -c \\| zstd -3 -T0" pc_capture "$(mib "$S_PC") MiB" "image file"
		row "zstd -dc \\| partclone.$FS -r" pc_restore "" ""
		row "dd bs=4M, whole partition" dd_partition "" "$(calc %.0f "$RAW_SPEED / 1e6") MB/s of partition bytes"
		row "$rawname" raw_used "" "a real raw in-use copy"
		printf '| raw in-use copy (dd speed × used bytes) | %s | | | | %s | | computed: the restore target |\n' "$RAW_INUSE_T" "$(calc %.0f "$RAW_SPEED / 1e6")"
		cat <<EOS

Targets ($N):

| target | measured | met |
| --- | --- | --- |
| capture faster than partclone + zstd | $W_PBC s vs $W_PCC s ($(calc %.2f "$W_PCC / $W_PBC")×) | $(pass "$W_PBC < $W_PCC") |
| restore faster than partclone + zstd | $W_PBR s vs $W_PCR s ($(calc %.2f "$W_PCR / $W_PBR")×) | $(pass "$W_PBR < $W_PCR") |
| image no larger than partclone + zstd -3 | $(mib "$S_PB") MiB vs $(mib "$S_PC") MiB ($(calc %.3f "$S_PB / $S_PC")×) | $(pass "$S_PB <= $S_PC") |
| restore (\`--no-delta\`) ≥ 90 % of the raw in-use copy speed | $(calc %.0f "100 * $RAW_INUSE_T / $W_PBR") % ($W_PBR s vs $RAW_INUSE_T s) | $(pass "$RAW_INUSE_T / $W_PBR >= 0.9") |
| restore (default mode, blank disk) ≥ 90 % of the raw in-use copy speed | $(calc %.0f "100 * $RAW_INUSE_T / $W_PBRD") % ($W_PBRD s vs $RAW_INUSE_T s) | $(pass "$RAW_INUSE_T / $W_PBRD >= 0.9") |
| restore ≥ 90 % of the real used-blocks copy (\`$rawshort\`) | $(calc %.0f "100 * $W_RU / $W_PBR") % ($W_PBR s vs $W_RU s) | $(pass "$W_RU / $W_PBR >= 0.9") |
| default mode onto a blank disk within 10 % of \`--no-delta\` | $W_PBRD s vs $W_PBR s ($(calc %.2f "$W_PBRD / $W_PBR")×) | $(pass "$W_PBRD <= 1.1 * $W_PBR") |
| unchanged re-capture ≥ 10× faster than the first | $W_PBRC s vs $W_PBC s ($(calc %.1f "$W_PBC / $W_PBRC")×) | $(pass "$W_PBC / $W_PBRC >= 10") |

Correctness ($N), checked in this run: $(paste -sd ';' "$WORK/$FS/verified.txt" | sed 's/;/; /g') — each passed \`${CHECK_NAME[$FS]}\`$([[ -s $WORK/$FS/issues.txt ]] && echo " (except as listed below)") and
matched the sha256 of all $NFILES source files (mounted read-only); the Preboot restores also
reproduced the MBR partition table.
$([[ -s $WORK/$FS/issues.txt ]] && { echo; echo "Found by the checks (the file checksums still matched):"; echo; sed 's/^/- /' "$WORK/$FS/issues.txt"; })

EOS
	} >"$WORK/$FS/section.md"
	printf '| %s | %.2f× | %.2f× | %.3f× | %s %% / %s %% | %.2f× | %s |\n' "$N" \
		"$(calc %.4f "$W_PCC / $W_PBC")" "$(calc %.4f "$W_PCR / $W_PBR")" "$(calc %.4f "$S_PB / $S_PC")" \
		"$(calc %.0f "100 * $RAW_INUSE_T / $W_PBR")" "$(calc %.0f "100 * $RAW_INUSE_T / $W_PBRD")" \
		"$(calc %.4f "$W_PBRD / $W_PBR")" "$(calc %.3f "$PB_USED / $USED")" >"$WORK/$FS/summary.md"
}

# --- the runs --------------------------------------------------------------------------------------
FIRST=1
for FS in $FILESYSTEMS; do
	mkdir -p "$WORK/$FS"
	: >"$WORK/$FS/results.tsv"; : >"$WORK/$FS/sizes.tsv"; : >"$WORK/$FS/verified.txt"; : >"$WORK/$FS/issues.txt"
	t0=$(date +%s)
	log "$FS: mkfs + fill a ${PART_BYTES}-byte partition image"
	make_part
	make_disk
	log "$FS: $(native_used) ($(($(date +%s) - t0)) s to make)"
	for r in $(seq "$ROUNDS"); do
		# Rotate the order so no tool always runs first (or right after another's cleanup).
		case $((r % 3)) in
		1) run_preboot "$r"; run_partclone "$r"; run_raw "$r" ;;
		2) run_raw "$r"; run_preboot "$r"; run_partclone "$r" ;;
		0) run_partclone "$r"; run_raw "$r"; run_preboot "$r" ;;
		esac
	done
	if [[ $PROFILE == 1 && $FIRST == 1 ]]; then run_profile; fi
	FIRST=0
	section
	rm -f "$PART" "$DISK"
	log "$FS done in $(($(date +%s) - t0)) s"
done
T_TOTAL=$(($(date +%s) - T_START))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report --------------------------------------------------------------------------------------
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM_GIB=$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
COMMIT=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(cd "$REPO" && [[ -n $(git status --porcelain -- agent image disk fsmap cli 2>/dev/null) ]] && echo " + uncommitted changes" || true)
debver() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "?"; }

{
	cat <<EOF
# Imaging benchmark: Preboot vs partclone + zstd vs raw copy (ext4, XFS, Btrfs, NTFS)

Generated by \`bench/imaging/run.sh\` on $(date -u +%Y-%m-%d). ROUNDS=$ROUNDS$([[ $ROUNDS -gt 1 ]] && echo ", medians reported (all runs listed)"); whole run $((T_TOTAL / 60)) min $((T_TOTAL % 60)) s.

## Machine and versions

- CPU: $CPU_MODEL, $(nproc) cores; memory ${MEM_GIB} GiB; kernel $(uname -r); all files on tmpfs
- Load average (1/5/15 min) at the start: $LOAD_START, at the end: $LOAD_END (the machine is shared)
- Preboot $COMMIT$DIRTY, $(go version | awk '{print $3}'), static build (CGO_ENABLED=0)
- partclone $(debver partclone), zstd $(zstd -V | grep -o 'v[0-9.]*' | head -1), e2fsprogs $(debver e2fsprogs), xfsprogs $(debver xfsprogs), btrfs-progs $(debver btrfs-progs), ntfs-3g $(debver ntfs-3g) (Debian package versions)

## Data set

Every filesystem gets the same tree, made by \`bench/imaging/gendata -seed $SEED -size $DATA_SIZE\`:
$(sed 's/^/- /' "$WORK/gendata.txt")

($NFILES files; "zero" files are written with zeros so their blocks are allocated; "sparse" is one
file with holes, 1 MiB of data every 16 MiB.) Each filesystem sits in the only partition of a
$DISK_MIB MiB MBR disk image, from 1 MiB to the end; disk and partition images are fully allocated (no holes).

## Summary

Ratios of medians; > 1× means Preboot is faster (capture, restore) — the image column is Preboot's
size / partclone's (≤ 1 meets the target). "vs raw" is the restore's speed as a share of a raw
copy of the in-use bytes at \`dd\` speed (target ≥ 90 %), for \`--no-delta\` / the default mode.

| filesystem | capture vs partclone+zstd | restore vs partclone+zstd | image size vs partclone+zstd | restore vs raw in-use copy | default / \`--no-delta\` onto blank | bytes Preboot reads / partclone's in-use |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
	for FS in $FILESYSTEMS; do cat "$WORK/$FS/summary.md"; done
	echo
	for FS in $FILESYSTEMS; do cat "$WORK/$FS/section.md"; done
	cat <<EOF
## How it was measured

- Preboot: \`preboot serve --proxydhcp=false --tftp=false --http-listen 127.0.0.1:$PORT\` in a network
  namespace made by the script (loopback only); \`preboot agent capture|restore --server http://127.0.0.1:$PORT
  --device FILE --image bench\` in the same namespace, on the **whole disk image** (table handling included).
  A fresh server and empty repository each round. Image size = growth of DATA_DIR/images (\`du -B1\`).
  "Blank file" = a zero-filled, fully allocated file of the disk's size (every target in this benchmark is one, so
  no timed run pays for tmpfs page allocation, which varies a lot on this VM); "identical disk" = a full copy of the source disk.
  "Default mode" is the agent without \`--no-delta\`: it would compare the target's windows with the
  image (delta) when the target already holds a partition of the image's layout; a blank disk has
  none, so it is written without being read first.
- partclone: \`partclone.FS -c -s part.img -o - | zstd -3 -T0 > img\`, restore
  \`zstd -dc img | partclone.FS -r -s - -O target\` (default partclone image format, CRC32 block checksums),
  on a partition image file holding the same bytes as the disk image's partition (the disk image is
  built from it). Working on the file instead of a loop device (\`losetup -P\`) spares partclone the
  loop driver's extra copy, so the comparison favours partclone if anything.
- raw: \`dd if=part.img of=blank bs=4M conv=notrunc\` of the whole partition gives the sequential copy
  speed; "raw in-use copy" = partclone's in-use bytes at that speed (the restore target). A real
  copy of just the used blocks is measured too: \`e2image -ra\` for ext4, \`partclone.FS -b\`
  (device-to-device, no image format, no compression) for the others.
- "In use" is partclone's count ("Space in use" in its log: the filesystem's allocation bitmap,
  for Btrfs the extent tree) — the same definition for every tool and every filesystem.
- Correctness of every restore of round 1 (of every round with VERIFY_ALL=1): the filesystem's
  own read-only check (e2fsck -fn, xfs_repair -n, btrfs check --readonly, ntfsfix -n), then a
  read-only mount (ntfs-3g for NTFS) and the sha256 of every file against the source tree.
- Each operation is run $ROUNDS time(s) per filesystem, interleaved, with the order of the three tools rotated per round.

## Reproduce

\`\`\`
apt-get install partclone zstd time e2fsprogs xfsprogs btrfs-progs ntfs-3g fdisk jq
sudo bench/imaging/run.sh        # ROUNDS=1, FILESYSTEMS="ext4 xfs btrfs ntfs", DATA_SIZE=1500MiB; PROFILE=1 adds CPU profiles
\`\`\`

<!-- notes -->
EOF
	if [[ -f $OUT_MD ]] && grep -q '^<!-- notes -->$' "$OUT_MD"; then
		sed '1,/^<!-- notes -->$/d' "$OUT_MD"
	fi
} >"$WORK/report.md"
cp "$WORK/report.md" "$OUT_MD"
cat "$WORK/report.md"
