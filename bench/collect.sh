#!/usr/bin/env bash
# Gathers the latest benchmark tables into docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
{
	echo "# Benchmarks"
	echo
	echo "Latest figures from the scripts in \`bench/\` (see bench/README.md), each run side by side with"
	echo "its peers on the same machine in the same run. These machines are shared and noisy: compare"
	echo "ratios within one table, not absolute numbers across tables."
	for f in docs/benchmarks-tftp.md docs/benchmarks-dhcp.md docs/benchmarks-dhcp-server.md docs/benchmarks-imaging.md docs/benchmarks-policy.md docs/benchmarks-multicast.md docs/benchmarks-bootstorm.md docs/benchmarks-replica.md; do
		[ -f "$f" ] || continue
		echo
		sed -e '1s/^# /## /' -e '2,$s/^## /### /' "$f"
	done
} > docs/benchmarks.md
echo "wrote docs/benchmarks.md"
