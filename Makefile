# Preboot — see README.md. `make run` and `make test` install what they need
# on a Debian machine (as root) before they build.

SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/preboot/preboot/server.Version=$(VERSION)
GO = $(shell scripts/go.sh)

# Debian packages: what the server hands out, and what the tests drive.
RUN_DEBS  := ipxe pxelinux syslinux-common ca-certificates curl unzip busybox-static kmod \
	e2fsprogs ntfs-3g fatresize xorriso isolinux grub-efi-amd64-bin grub-common mtools
TEST_DEBS := $(RUN_DEBS) qemu-system-x86 qemu-utils ipxe-qemu busybox-static ovmf kmod cpio postgresql chromium \
	dnsmasq-base atftp tftp-hpa isc-dhcp-client udhcpc nftables iproute2 kea-admin dpkg-dev \
	e2fsprogs dosfstools mtools ntfs-3g fdisk gdisk extlinux tar udpcast zstd \
	xfsprogs btrfs-progs lvm2 dmsetup partclone efibootmgr grub-efi-amd64-bin fatresize

APT := DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0

.PHONY: all build env run test test-unit test-fuzz test-e2e fuzz bench bench-multicast deps-run deps-test vet clean s3server

all: build

define install_debs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(APT) update && $(APT) install --no-install-recommends $$missing; \
	fi
endef

deps-run:
	$(call install_debs,$(RUN_DEBS))

deps-test:
	$(call install_debs,$(TEST_DEBS))
	@# The VM lab fetches Debian's kernel with apt-get download: it needs package lists.
	@ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || $(APT) update

# Static (CGO_ENABLED=0): the same binary is the imaging agent, /init of the imaging environment.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/preboot ./cmd/preboot

# The imaging environment (Debian's kernel + an initrd holding bin/preboot) where imaging jobs run.
env: build
	@if [ ! -f var/tftp/boot/initrd ] || [ bin/preboot -nt var/tftp/boot/initrd ]; then \
		./bin/preboot env build --out var/tftp/boot --cache var/cache/env || \
		echo "warning: the imaging environment could not be built; network boot works, imaging jobs will fail until 'make env' succeeds"; \
	fi

# Runs the server with its embedded defaults: data in ./var, proxyDHCP on
# UDP 67 and 4011, TFTP on 69, HTTP on 8080, on every interface.
run: deps-run build env
	./bin/preboot serve --data-dir ./var

vet:
	@out=$$($(dir $(GO))gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

test: deps-test vet test-unit test-fuzz test-e2e

# Unit, real-client protocol tests and fuzz seed corpora, with the race detector.
test-unit: s3server
	PREBOOT_WEED=$(S3SERVER) $(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v /e2e)

# The S3 server the image-store tests start (SeaweedFS, image/s3store/s3test),
# built once from its own Go module into a machine-wide cache outside this
# module (its dependency tree never enters go.mod; fresh clones reuse it).
# A cold build costs about 9 CPU-minutes (38 minutes of wall time here, on 2
# cores shared with other builds), a rebuild with Go's build cache warm 35 s;
# it is bounded by S3SERVER_BUILD_TIMEOUT,
# and what it compiled stays in Go's build cache, so a build cut short
# continues at the next run. Without the binary those tests skip saying so.
# Keep the version equal to s3test.WeedVersion.
S3SERVER_VERSION := v0.0.0-20261109003541-7506e5f91cd6
S3SERVER := /var/cache/preboot/s3server/weed-$(S3SERVER_VERSION)
S3SERVER_BUILD_TIMEOUT ?= 15m
s3server:
	@if [ -x $(S3SERVER) ]; then exit 0; fi; \
	echo "building SeaweedFS $(S3SERVER_VERSION) into $(S3SERVER) (at most $(S3SERVER_BUILD_TIMEOUT))"; \
	go=$$(realpath $(GO)); \
	dir=$$(cd / && GOFLAGS= $$go mod download -json github.com/seaweedfs/seaweedfs@$(S3SERVER_VERSION) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	mkdir -p $(dir $(S3SERVER)) && cd "$$dir" && \
	CGO_ENABLED=0 GOFLAGS=-mod=readonly nice timeout $(S3SERVER_BUILD_TIMEOUT) $$go build -trimpath -o $(S3SERVER).tmp ./weed && \
	mv $(S3SERVER).tmp $(S3SERVER) || \
	{ rm -f $(S3SERVER).tmp; echo "warning: SeaweedFS was not built: the S3 image-store tests will skip"; }

# The VM lab: network namespaces + QEMU (see e2e/README.md).
test-e2e:
	$(GO) test -count=1 -timeout 40m -v ./e2e/ ./e2e/nslab/

# Every fuzz target (func Fuzz* in a _test.go file), one after the other,
# FUZZTIME each (seed corpora in testdata/fuzz/ run with test-unit too).
# The first run builds the instrumented packages (minutes: modernc's
# SQLite); later runs take about FUZZTIME per target.
# Go 1.26's fuzzing coordinator can report a bare "context deadline
# exceeded" when -fuzztime ends while a worker is busy (go.dev/issue/75804,
# fixed in Go 1.27): such a run, with no failing input written, is run
# again once; any other failure fails at once.
FUZZTIME ?= 2s
test-fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./e2e/' | sort); do \
		pkg=./$$(dirname $${f#./}); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			for try in 1 2; do \
				echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
				if $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 5s $$pkg >$$log 2>&1; then \
					cat $$log; break; \
				fi; \
				cat $$log; \
				if [ $$try = 1 ] && grep -q 'context deadline exceeded' $$log && ! grep -q 'Failing input written' $$log; then \
					echo "fuzz $$t: the Go fuzzing coordinator's deadline race (go.dev/issue/75804), no failing input: once more"; \
					continue; \
				fi; \
				exit 1; \
			done; \
		done; \
	done

# Longer fuzzing runs of the same targets.
fuzz:
	$(MAKE) test-fuzz FUZZTIME=30s

BENCH_DEBS := partclone zstd time xfsprogs btrfs-progs ntfs-3g jq

bench: deps-test build
	$(call install_debs,$(BENCH_DEBS))
	bench/tftp/run.sh
	bench/dhcp/run.sh
	bench/dhcpserver/run.sh
	bench/imaging/run.sh
	bench/policy/run.sh
	bench/collect.sh

# Multicast (issue 10): Preboot vs udpcast vs unicast in the namespace lab of e2e/nslab (~15 min, root).
bench-multicast: deps-test
	bench/multicast/run.sh
	bench/collect.sh

clean:
	rm -rf bin
