// Package e2e holds Preboot's VM lab: end-to-end tests that boot real
// firmware (SeaBIOS with QEMU's iPXE option ROM, OVMF with EDK2's own PXE)
// under QEMU inside network namespaces the tests create, against a real
// `preboot serve` and a real site DHCP server (dnsmasq).
//
// The tests need root and /dev/net/tun; see README.md.
package e2e
