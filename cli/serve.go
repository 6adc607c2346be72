package cli

import (
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/server"
)

// serveFlags binds every configuration key to a flag. A flag given on the
// command line wins over the file, the file over the embedded default.
func serveFlags(fs *pflag.FlagSet, c *config.Config) {
	d := config.Default()
	fs.StringVar(&c.DataDir, "data-dir", d.DataDir, "data directory (database, TFTP root, images)")
	fs.StringVar(&c.Interface, "interface", d.Interface, "serve proxyDHCP on this interface only (default: all)")
	fs.StringVar(&c.ServerIP, "server-ip", d.ServerIP, "IPv4 address clients use to reach this server (default: the receiving interface's)")
	fs.StringVar(&c.Log.Level, "log-level", d.Log.Level, "log level: debug, info, warn, error")
	fs.StringVar(&c.Log.Format, "log-format", d.Log.Format, "log format: auto (text on a terminal, else JSON), text, json")
	fs.StringVar(&c.Store.Path, "db", d.Store.Path, "SQLite database file (default DATA_DIR/preboot.db)")
	fs.BoolVar(&c.TFTP.Enabled, "tftp", d.TFTP.Enabled, "run the TFTP server")
	fs.StringVar(&c.TFTP.Listen, "tftp-listen", d.TFTP.Listen, "TFTP listen address HOST:PORT")
	fs.StringVar(&c.TFTP.Root, "tftp-root", d.TFTP.Root, "TFTP root directory (default DATA_DIR/tftp)")
	fs.IntVar(&c.TFTP.MaxBlockSize, "tftp-max-blksize", d.TFTP.MaxBlockSize, "largest TFTP block size offered (512..65464)")
	fs.IntVar(&c.TFTP.MaxWindow, "tftp-max-windowsize", d.TFTP.MaxWindow, "largest TFTP window size offered (1..64)")
	fs.IntVar(&c.TFTP.MaxTransfers, "tftp-max-transfers", d.TFTP.MaxTransfers, "TFTP transfers in progress at most (requests beyond are dropped)")
	fs.IntVar(&c.TFTP.MaxTransfersPerClient, "tftp-max-transfers-per-client", d.TFTP.MaxTransfersPerClient, "TFTP transfers in progress at most from one source address")
	fs.DurationVar(&c.HTTP.ReadTimeout, "http-read-timeout", d.HTTP.ReadTimeout, "HTTP: longest wait for a request's headers, or stall of its body")
	fs.DurationVar(&c.HTTP.WriteTimeout, "http-write-timeout", d.HTTP.WriteTimeout, "HTTP: longest stall writing a response")
	fs.DurationVar(&c.HTTP.IdleTimeout, "http-idle-timeout", d.HTTP.IdleTimeout, "HTTP: keep-alive connections idle this long are closed")
	fs.IntVar(&c.HTTP.MaxEventStreams, "http-max-event-streams", d.HTTP.MaxEventStreams, "open event streams (SSE) at most (0 = no cap)")
	fs.IntVar(&c.HTTP.MaxEventStreamsPerClient, "http-max-event-streams-per-client", d.HTTP.MaxEventStreamsPerClient, "open event streams at most per client address (0 = no cap)")
	fs.StringSliceVar(&c.ProxyDHCP.Interfaces, "proxydhcp-interfaces", d.ProxyDHCP.Interfaces, "answer PXE clients on these interfaces only (default: those with a non-loopback IPv4 address; never loopback)")
	fs.StringSliceVar(&c.ProxyDHCP.Subnets, "proxydhcp-subnets", d.ProxyDHCP.Subnets, "answer PXE clients of these subnets only, CIDR (default: any)")
	fs.DurationVar(&c.Retention.Events, "retention-events", d.Retention.Events, "delete events older than this (0 = keep)")
	fs.DurationVar(&c.Retention.Jobs, "retention-jobs", d.Retention.Jobs, "delete jobs (and logs) finished longer ago than this (0 = keep)")
	fs.IntVar(&c.Retention.MaxEvents, "retention-max-events", d.Retention.MaxEvents, "keep at most this many events, the newest (0 = no cap)")
	fs.DurationVar(&c.Retention.UnregisteredDevices, "retention-unregistered-devices", d.Retention.UnregisteredDevices, "delete devices never registered (no name, group, assignment or job) not seen for this long (0 = keep)")
	fs.StringVar(&c.HTTP.Listen, "http-listen", d.HTTP.Listen, "HTTP listen address HOST:PORT (boot policy, files, API, metrics)")
	fs.BoolVar(&c.HTTP.TrustLoopback, "trust-loopback", d.HTTP.TrustLoopback, "UNSAFE: let every loopback client (any local user, any reverse proxy on this host) use the admin API without a token")
	fs.StringVar(&c.HTTP.AdminSocket, "admin-socket", d.HTTP.AdminSocket, `unix socket for local administration (root, the server's user, group preboot); relative to DATA_DIR; "" = none`)
	fs.StringSliceVar(&c.HTTP.Hosts, "http-hosts", d.HTTP.Hosts, "names this server answers to besides IP addresses, localhost and the host name (comma-separated)")
	fs.StringVar(&c.HTTP.TLSListen, "tls-listen", d.HTTP.TLSListen, `HTTPS listen address HOST:PORT (console, API, images, agents); "" = no TLS`)
	fs.StringVar(&c.HTTP.TLSCert, "tls-cert", d.HTTP.TLSCert, "TLS certificate PEM file (default: a self-signed one generated under DATA_DIR/tls)")
	fs.StringVar(&c.HTTP.TLSKey, "tls-key", d.HTTP.TLSKey, "TLS private key PEM file (with --tls-cert)")
	fs.StringSliceVar(&c.HTTP.PeerServers, "peer-servers", d.HTTP.PeerServers, "agent URLs (https://HOST:8443) of the other servers on the same database and image store: imaging agents go on with them when this one dies (same certificate on all; docs/scale-out.md)")
	fs.BoolVar(&c.ProxyDHCP.Enabled, "proxydhcp", d.ProxyDHCP.Enabled, "run the proxyDHCP server")
	fs.StringVar(&c.ProxyDHCP.DHCPListen, "proxydhcp-dhcp-listen", d.ProxyDHCP.DHCPListen, `proxyDHCP address on the DHCP port; "" when the site DHCP server runs on this host`)
	fs.StringVar(&c.ProxyDHCP.PXEListen, "proxydhcp-pxe-listen", d.ProxyDHCP.PXEListen, "proxyDHCP address on the PXE port (4011)")
	fs.StringSliceVar(&c.DHCP.Ranges, "dhcp-range", d.DHCP.Ranges, "run the embedded DHCP server on the network holding this range START-END (repeatable; off by default); it then owns UDP 67 and proxyDHCP keeps 4011")
	fs.StringSliceVar(&c.DHCP.Routers, "dhcp-router", d.DHCP.Routers, "default gateway(s) the DHCP server hands out (option 3)")
	fs.StringSliceVar(&c.DHCP.DNS, "dhcp-dns", d.DHCP.DNS, "DNS server(s) the DHCP server hands out (option 6)")
	fs.StringVar(&c.DHCP.Domain, "dhcp-domain", d.DHCP.Domain, "domain name the DHCP server hands out (option 15)")
	fs.DurationVar(&c.DHCP.LeaseTime, "dhcp-lease-time", d.DHCP.LeaseTime, "DHCP lease time")
	fs.StringSliceVar(&c.DHCP6.Ranges, "dhcp6-range", d.DHCP6.Ranges, "run the embedded DHCPv6 server (UDP 547) on the network holding this IPv6 range START-END or prefix /64../120 (repeatable; off by default)")
	fs.StringSliceVar(&c.DHCP6.DNS, "dhcp6-dns", d.DHCP6.DNS, "IPv6 DNS server(s) the DHCPv6 server hands out (option 23)")
	fs.DurationVar(&c.DHCP6.LeaseTime, "dhcp6-lease-time", d.DHCP6.LeaseTime, "DHCPv6 address valid lifetime")
	fs.BoolVar(&c.DHCP6.Proxy, "dhcp6-proxy", d.DHCP6.Proxy, "DHCPv6 proxy (UDP 547 and 4011): the site's DHCPv6 server hands out addresses, Preboot adds the boot file for UEFI PXE firmware (docs/ipv6.md); excludes --dhcp6-range")
	fs.StringVar(&c.Boot.BIOS, "bios-boot-file", d.Boot.BIOS, "boot program for BIOS PXE clients")
	fs.StringVar(&c.Boot.UEFI, "uefi-boot-file", d.Boot.UEFI, "boot program for UEFI x64 PXE clients (ipxe.efi or snponly.efi)")
	fs.StringVar(&c.Boot.UEFIHTTP, "uefi-http-boot-file", d.Boot.UEFIHTTP, "boot program for UEFI HTTP boot clients")
	fs.StringVar(&c.Boot.ARM64, "arm64-boot-file", d.Boot.ARM64, "boot program for UEFI ARM64 clients (if present in the TFTP root)")
	fs.StringVar(&c.Boot.LocalBootBIOS, "local-boot-bios", d.Boot.LocalBootBIOS, "how BIOS machines boot their disk: sanboot or exit")
	fs.BoolVar(&c.Boot.CopyDebianFiles, "copy-debian-files", d.Boot.CopyDebianFiles, "copy iPXE/pxelinux from Debian's packages into the TFTP root at start (and Debian's signed shim and GRUB, downloaded when not installed)")
	fs.StringVar(&c.Boot.SignedCache, "signed-cache", d.Boot.SignedCache, `where the signed shim and GRUB packages are kept ("" = DATA_DIR/cache/signed)`)
	fs.StringVar(&c.Menu.Mode, "menu-mode", d.Menu.Mode, "Preboot menu: always, hotkey or never")
	fs.StringVar(&c.Menu.Hotkey, "menu-hotkey", d.Menu.Hotkey, `menu hotkey: a letter, "ctrl-X", "esc"`)
	fs.DurationVar(&c.Menu.Timeout, "menu-timeout", d.Menu.Timeout, "hotkey wait / menu auto-choice delay")
	fs.StringVar(&c.Menu.Title, "menu-title", d.Menu.Title, "Preboot menu title")
	fs.StringVar(&c.ServerURL, "server-url", d.ServerURL, "where admin commands find the API")
	fs.StringVar(&c.Store.Driver, "store-driver", d.Store.Driver, "database: sqlite or postgres")
	fs.StringVar(&c.Store.DSN, "store-dsn", d.Store.DSN, "PostgreSQL connection string (with --store-driver postgres; it may hold a password: prefer $PREBOOT_STORE_DSN)")
	fs.StringVar(&c.Boot.PXELinux, "pxelinux-boot-file", d.Boot.PXELinux, "pxelinux program for devices whose work uses --loader pxelinux")
	fs.StringVar(&c.Imaging.Repo, "image-repo", d.Imaging.Repo, "image repository directory (default DATA_DIR/images)")
	fs.StringVar(&c.Imaging.Store, "image-store", d.Imaging.Store, "keep images in an S3-compatible bucket instead: s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=R (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or credentials=FILE; see docs/scale-out.md)")
	fs.StringVar(&c.Imaging.Kernel, "imaging-kernel", d.Imaging.Kernel, "imaging environment kernel, under the TFTP root")
	fs.StringVar(&c.Imaging.Initrd, "imaging-initrd", d.Imaging.Initrd, "imaging environment initrd, under the TFTP root")
	fs.StringVar(&c.Imaging.Cmdline, "imaging-cmdline", d.Imaging.Cmdline, "kernel command line before the per-job parameters")
	fs.DurationVar(&c.Imaging.GCInterval, "image-gc-interval", d.Imaging.GCInterval, "collect the image repository's garbage this often (0 = only by `preboot image gc`)")
	c.Imaging.MaxRepoSize = d.Imaging.MaxRepoSize
	fs.Var(&c.Imaging.MaxRepoSize, "image-max-repo-size", "image repository size limit, e.g. 2TiB (0 = unlimited); uploads and imports past it are refused")
	fs.DurationVar(&c.Jobs.PendingTTL, "job-pending-ttl", d.Jobs.PendingTTL, "a job handed out to a device expires when its agent has not started within this time")
	fs.StringVar(&c.Multicast.Interface, "multicast-interface", d.Multicast.Interface, "send multicast sessions out of this interface (empty: no multicast, multicast bundles restore by unicast)")
	c.Multicast.Rate = d.Multicast.Rate
	fs.Var(&c.Multicast.Rate, "multicast-rate", "cap on what multicast sessions send together, bits/s (e.g. 500M, 1G): keep it below the slowest link to the receivers")
	fs.IntVar(&c.Multicast.Port, "multicast-port", d.Multicast.Port, "UDP port of the multicast sessions")
	fs.StringVar(&c.Multicast.Range, "multicast-range", d.Multicast.Range, "IPv4 multicast range session groups come from")
	fs.IntVar(&c.Multicast.TTL, "multicast-ttl", d.Multicast.TTL, "TTL of multicast packets (1: this network only)")
	fs.DurationVar(&c.Jobs.StaleAfter, "job-stale-after", d.Jobs.StaleAfter, "a started job expires after this long without word from its agent")
	fs.IntVar(&c.Wake.Port, "wake-port", d.Wake.Port, "UDP port of Wake-on-LAN magic packets (0: 9)")
	fs.StringSliceVar(&c.Wake.Interfaces, "wake-interfaces", d.Wake.Interfaces, "when nothing is known of where a device is, send its magic packet out of these interfaces only (default: every interface up with IPv4)")
	fs.StringSliceVar(&c.Wake.Subnets, "wake-subnets", d.Wake.Subnets, "routed client subnets (CIDR) woken by their directed broadcast (routers must forward it); --proxydhcp-subnets count too")
	fs.DurationVar(&c.Wake.Interval, "wake-interval", d.Wake.Interval, "how often the scheduler looks for scheduled wakes that came due (0: 10s)")
	fs.Var((*wakeRelaysFlag)(&c.Wake.Relays), "wake-relay", "a Preboot server that wakes the devices of a subnet this one has no interface on: SUBNET=URL[,fingerprint=sha256:HEX][,token-file=FILE] (repeatable; wake.relays)")
	fs.StringVar(&c.Upstream.URL, "upstream", d.Upstream.URL, "site server: replicate the images of this central server (https://HOST:8443; docs/scale-out.md)")
	fs.StringVar(&c.Upstream.TokenFile, "upstream-token-file", d.Upstream.TokenFile, "file holding an admin token of the --upstream server")
	fs.StringVar(&c.Upstream.Pin, "upstream-pin", d.Upstream.Pin, "the --upstream server's certificate fingerprint, sha256:HEX (default: verified by the system's CAs)")
	fs.StringVar(&c.Upstream.Replicate, "replicate", d.Upstream.Replicate, "images to replicate: all, or NAME, PATTERN (lab-*) and label:KEY=VALUE terms, comma-separated")
	fs.BoolVar(&c.Upstream.KeepDeleted, "replicate-keep-deleted", d.Upstream.KeepDeleted, "keep images and versions the upstream removed (default: remove them here too)")
	fs.DurationVar(&c.Upstream.Interval, "replicate-interval", d.Upstream.Interval, "time between replication rounds (0: 5m; one runs at start)")
	fs.DurationVar(&c.Upstream.ScrubInterval, "replicate-scrub-interval", d.Upstream.ScrubInterval, "time between scrubs re-hashing the replicated chunks at rest (0: 24h; negative: never)")
	fs.IntVar(&c.Upstream.Parallel, "replicate-parallel", d.Upstream.Parallel, "chunks fetched from the upstream at once (0: 4)")
}

func newServe(g *globals) *cobra.Command {
	var flags config.Config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server: proxyDHCP, TFTP and HTTP",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.load()
			if err != nil {
				return err
			}
			applyChanged(cmd.Flags(), &cfg)
			if cmd.Flags().Changed("store-dsn") {
				warnArgvSecret(g, "store-dsn", "$PREBOOT_STORE_DSN or store.dsn in the configuration file")
			}
			log, err := newLogger(g.stderr, cfg.Log.Format, cfg.Log.Level)
			if err != nil {
				return err
			}
			return server.Run(cmd.Context(), cfg, log)
		},
	}
	serveFlags(cmd.Flags(), &flags)
	return cmd
}

// applyChanged copies into cfg the values of the flags set on the command
// line. Binding a scratch flag set to cfg (which resets cfg to the defaults,
// hence the copy) keeps a single list of flags.
func applyChanged(fs *pflag.FlagSet, cfg *config.Config) {
	loaded := *cfg
	tmp := pflag.NewFlagSet("apply", pflag.ContinueOnError)
	serveFlags(tmp, cfg)
	*cfg = loaded
	fs.Visit(func(f *pflag.Flag) {
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			if dst, ok := tmp.Lookup(f.Name).Value.(pflag.SliceValue); ok {
				_ = dst.Replace(sv.GetSlice())
				return
			}
		}
		_ = tmp.Set(f.Name, f.Value.String())
	})
}
