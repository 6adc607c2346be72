#!/bin/bash
# Site server replication vs rsync of the repository directory, on this
# machine (loopback; no network namespace needed). SIZE_MIB (256), CHANGED
# (0.02: share of the disk's MiB with one 4 KiB block rewritten).
# Writes docs/benchmarks-replica.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v rsync >/dev/null || { echo "rsync is needed (apt-get install rsync)" >&2; exit 1; }
work=$(mktemp -d /tmp/preboot-bench-replica-XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/replica-bench" ./bench/replica
out=docs/benchmarks-replica.md
{
  echo "# Benchmark: site server replication"
  echo
  echo "\`bench/replica/run.sh\`: a site server's replicator pulling an image from a central repository"
  echo "served over HTTPS by the real image handler (loopback), side by side in the same run with"
  echo "rsync of the same repository directory (local copy: no transport encryption, no verification)."
  echo
  "$work/replica-bench" -dir "$work" -size "${SIZE_MIB:-256}" -changed "${CHANGED:-0.02}"
} > "$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
