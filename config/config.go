// Package config holds Preboot's settings: embedded defaults, overridden by
// a YAML file, overridden by command-line flags.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole server configuration. Every field has a YAML key and
// a command-line flag (see cli).
type Config struct {
	// DataDir holds the database, the TFTP root (by default) and images.
	DataDir string `yaml:"data_dir"`
	// Interface restricts proxyDHCP to one network interface and picks the
	// address advertised to clients. Empty: all interfaces.
	Interface string `yaml:"interface"`
	// ServerIP is the IPv4 address clients should use to reach this
	// server. Empty: the address of the interface each request came in on.
	ServerIP string `yaml:"server_ip"`
	// ServerURL is where admin commands reach the API.
	ServerURL string `yaml:"server_url"`

	Log       Log       `yaml:"log"`
	Store     Store     `yaml:"store"`
	TFTP      TFTP      `yaml:"tftp"`
	HTTP      HTTP      `yaml:"http"`
	ProxyDHCP ProxyDHCP `yaml:"proxydhcp"`
	Boot      Boot      `yaml:"boot"`
	Menu      Menu      `yaml:"menu"`
	Imaging   Imaging   `yaml:"imaging"`
	Retention Retention `yaml:"retention"`
	Jobs      Jobs      `yaml:"jobs"`
	Multicast Multicast `yaml:"multicast"`

	// DHCP is the embedded DHCP server, off by default (config/dhcp.go).
	DHCP DHCPServer `yaml:"dhcp"`
	// DHCP6 is the embedded DHCPv6 server, off by default (config/dhcp6.go).
	DHCP6 DHCP6Server `yaml:"dhcp6"`
	// Wake is Wake-on-LAN (config/wake.go).
	Wake Wake `yaml:"wake"`
	// Upstream makes this a site server replicating a central server's
	// images (config/upstream.go).
	Upstream Upstream `yaml:"upstream"`
}

// Multicast configures multicast sessions (docs/multicast.md). With no
// Interface there is no multicast: multicast bundles restore by unicast.
type Multicast struct {
	// Interface sends the sessions' data, e.g. eth0.
	Interface string `yaml:"interface"`
	// Rate caps what all sessions together send, in bits/s (500M).
	Rate BitRate `yaml:"rate"`
	// Port is the UDP port of the sessions' groups (9500).
	Port int `yaml:"port"`
	// Range is where session groups come from (239.255.0.0/16).
	Range string `yaml:"range"`
	// TTL of the data packets (1: this network only; raise it to cross
	// multicast routers).
	TTL int `yaml:"ttl"`
}

// Jobs bounds the life of jobs and their tokens: a job handed out to a
// device whose agent never starts, or whose agent goes silent, expires
// as failed (its apply-once assignment stays for the next boot) and its
// token stops working.
type Jobs struct {
	// PendingTTL: how long a handed-out job waits for its agent.
	PendingTTL time.Duration `yaml:"pending_ttl"`
	// StaleAfter: how long a started job may go without word from its
	// agent (it reports every few seconds).
	StaleAfter time.Duration `yaml:"stale_after"`
}

// Retention bounds what the database keeps; the server prunes hourly.
type Retention struct {
	// Events older than this are deleted (0 keeps them).
	Events time.Duration `yaml:"events"`
	// Jobs that finished longer ago than this are deleted with their logs
	// (0 keeps them); jobs still open are never deleted.
	Jobs time.Duration `yaml:"jobs"`
	// MaxEvents keeps at most this many events, the newest (0: no cap).
	MaxEvents int `yaml:"max_events"`
	// UnregisteredDevices: devices never registered (no name, group,
	// assignment or job) and not seen for this long are deleted (0 keeps
	// them): a client claiming made-up MACs adds no lasting rows.
	UnregisteredDevices time.Duration `yaml:"unregistered_devices"`
}

// Imaging configures disk imaging: where images are kept and the imaging
// environment (built by `preboot env build`) that devices boot for jobs.
type Imaging struct {
	// Repo is the image repository directory (default DATA_DIR/images).
	Repo string `yaml:"repo"`
	// Store, when set, keeps the image repository in an S3-compatible
	// bucket instead of Repo: s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&...
	// (see docs/scale-out.md; credentials from the environment or a file).
	Store string `yaml:"store"`
	// Kernel and Initrd are the imaging environment, relative to the TFTP
	// root (the seed's /boot/kernel and /boot/initrd).
	Kernel string `yaml:"kernel"`
	Initrd string `yaml:"initrd"`
	// Cmdline is put before the per-job parameters on the kernel command line.
	Cmdline string `yaml:"cmdline"`
	// GCInterval: how often the server collects the repository's garbage
	// (chunks no image version references, leftover temporary files,
	// upload records of jobs no longer open); 0 disables it
	// (`preboot image gc` still works).
	GCInterval time.Duration `yaml:"gc_interval"`
	// MaxRepoSize bounds the bytes of stored chunks (0: no limit): uploads
	// and imports past it are refused (HTTP 507).
	MaxRepoSize ByteSize `yaml:"max_repo_size"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // auto (text on a terminal, JSON otherwise), text, json
}

// Store selects the database.
type Store struct {
	Driver string `yaml:"driver"` // sqlite (default) or postgres
	Path   string `yaml:"path"`   // SQLite file; default DATA_DIR/preboot.db
	// DSN is the PostgreSQL connection string (driver postgres), e.g.
	// "postgres://preboot:secret@db.example/preboot" or
	// "host=/run/postgresql dbname=preboot". Several Preboot servers may
	// share one database.
	DSN string `yaml:"dsn"`
}

// TFTP configures the TFTP server.
type TFTP struct {
	Enabled      bool   `yaml:"enabled"`
	Listen       string `yaml:"listen"`
	Root         string `yaml:"root"` // default DATA_DIR/tftp
	MaxBlockSize int    `yaml:"max_blksize"`
	MaxWindow    int    `yaml:"max_windowsize"`
	// MaxTransfers caps the transfers in progress, MaxTransfersPerClient
	// those from one source address; requests beyond are dropped (the
	// client retransmits).
	MaxTransfers          int `yaml:"max_transfers"`
	MaxTransfersPerClient int `yaml:"max_transfers_per_client"`
}

// HTTP configures the HTTP server (boot policy, boot files, API, metrics).
type HTTP struct {
	Listen string `yaml:"listen"`
	// TrustLoopback lets clients on this machine's loopback interface use
	// the admin API without a token. UNSAFE, off by default: every local
	// user (and every client of a reverse proxy on this host) becomes an
	// administrator. Local administration goes through AdminSocket.
	TrustLoopback bool `yaml:"trust_loopback"`
	// AdminSocket is the unix socket of local administration (the CLI on
	// this host): root, the server's own user and members of the group
	// "preboot" are admins there, checked by SO_PEERCRED. Relative paths
	// are under DataDir; "" switches it off.
	AdminSocket string `yaml:"admin_socket"`
	// Hosts are the names this server answers to on TCP (the Host header
	// of console, API and image requests); IP literals, localhost and the
	// machine's host name are always accepted.
	Hosts []string `yaml:"hosts"`
	// TLSListen is the HTTPS address (console, API, images, agent API,
	// boot files); "" switches TLS off (then everything is served on
	// Listen in clear, as firmware needs for its own files).
	TLSListen string `yaml:"tls_listen"`
	// TLSCert and TLSKey are PEM files; empty: a self-signed certificate
	// generated at the first start under DataDir/tls.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// ReadTimeout bounds reading a request's headers, and how long its
	// body may stall (bodies must also keep a minimum rate);
	// WriteTimeout how long writing a response may stall; IdleTimeout
	// how long a keep-alive connection waits for its next request.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// MaxEventStreams caps the open event streams (SSE) in all and
	// MaxEventStreamsPerClient those of one client address (429 beyond).
	MaxEventStreams          int `yaml:"max_event_streams"`
	MaxEventStreamsPerClient int `yaml:"max_event_streams_per_client"`
	// PeerServers are the agent base URLs (https://HOST:8443) of the
	// other servers sharing this one's database and image store
	// (docs/scale-out.md); this server's own URL may be among them.
	PeerServers []string `yaml:"peer_servers"`
}

// ProxyDHCP configures the proxyDHCP server.
type ProxyDHCP struct {
	Enabled bool `yaml:"enabled"`
	// DHCPListen is the DHCP port address (":67"); empty switches it off,
	// as when the site's DHCP server runs on this host (it owns port 67 and
	// sends clients to 4011 with option 60 "PXEClient").
	DHCPListen string `yaml:"dhcp_listen"`
	// PXEListen is the PXE boot-server port address (":4011").
	PXEListen string `yaml:"pxe_listen"`
	// Interfaces are the network interfaces whose clients are answered;
	// empty: every interface with a non-loopback IPv4 address. Loopback
	// is never answered.
	Interfaces []string `yaml:"interfaces"`
	// Subnets (CIDR) are the client networks answered, as dnsmasq's
	// dhcp-range in proxy mode: a relayed request's gateway address, a
	// client's own address, or else an address of the receiving
	// interface must be inside one; empty: any.
	Subnets []string `yaml:"subnets"`
}

// Boot names the boot programs handed out per firmware, relative to the
// TFTP root.
type Boot struct {
	BIOS     string `yaml:"bios"`      // BIOS PXE: undionly.kpxe
	UEFI     string `yaml:"uefi"`      // UEFI x64 PXE: ipxe.efi or snponly.efi
	UEFIHTTP string `yaml:"uefi_http"` // UEFI HTTP boot (fetched over HTTP): ipxe.efi
	ARM64    string `yaml:"arm64"`     // UEFI ARM64: only if the file exists
	PXELinux string `yaml:"pxelinux"`  // pxelinux.0 for devices whose work uses pxelinux
	// LocalBootBIOS is how a BIOS machine leaves iPXE for its own disk:
	// "sanboot" (boot drive 0x80 through iPXE) or "exit" (return to the BIOS
	// boot order).
	LocalBootBIOS string `yaml:"local_boot_bios"`
	// CopyDebianFiles copies iPXE/pxelinux binaries from Debian's packages
	// into the TFTP root at start.
	CopyDebianFiles bool `yaml:"copy_debian_files"`
	// SignedCache keeps Debian's signed shim and GRUB packages, downloaded
	// at start when they are not installed ("" = DATA_DIR/cache/signed).
	SignedCache string `yaml:"signed_cache"`
}

// Menu configures the Preboot menu (the seed's pxemenu).
type Menu struct {
	Mode    string        `yaml:"mode"`    // always, hotkey, never
	Hotkey  string        `yaml:"hotkey"`  // e.g. "ctrl-p", "m", "esc", "f8"
	Timeout time.Duration `yaml:"timeout"` // hotkey wait, or menu auto-choice delay
	Title   string        `yaml:"title"`
}

// Default returns the embedded defaults.
func Default() Config {
	return Config{
		DataDir:   "./var",
		ServerURL: "https://127.0.0.1:8443",
		Log:       Log{Level: "info", Format: "auto"},
		Store:     Store{Driver: "sqlite"},
		TFTP:      TFTP{Enabled: true, Listen: ":69", MaxBlockSize: 65464, MaxWindow: 64, MaxTransfers: 1024, MaxTransfersPerClient: 16},
		HTTP: HTTP{ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second,
			MaxEventStreams: 256, MaxEventStreamsPerClient: 16, Listen: ":8080", AdminSocket: "admin.sock", TLSListen: ":8443"},
		ProxyDHCP: ProxyDHCP{Enabled: true, DHCPListen: ":67", PXEListen: ":4011"},
		DHCP:      DHCPServer{LeaseTime: DefaultDHCPLeaseTime},
		DHCP6:     DHCP6Server{LeaseTime: DefaultDHCPLeaseTime},
		Boot: Boot{
			BIOS: "undionly.kpxe", UEFI: "ipxe.efi", UEFIHTTP: "ipxe.efi", ARM64: "ipxe-arm64.efi",
			PXELinux: "pxelinux.0", LocalBootBIOS: "sanboot", CopyDebianFiles: true,
		},
		Menu:      Menu{Mode: "hotkey", Hotkey: "ctrl-p", Timeout: 3 * time.Second, Title: "Preboot"},
		Jobs:      Jobs{PendingTTL: 15 * time.Minute, StaleAfter: 3 * time.Minute},
		Multicast: Multicast{Rate: 500_000_000, Port: 9500, Range: "239.255.0.0/16", TTL: 1},
		Imaging:   Imaging{Kernel: "boot/kernel", Initrd: "boot/initrd", Cmdline: "console=tty0 console=ttyS0,115200 quiet", GCInterval: 6 * time.Hour},
		Retention: Retention{Events: 30 * 24 * time.Hour, Jobs: 90 * 24 * time.Hour, MaxEvents: 1_000_000, UnregisteredDevices: 30 * 24 * time.Hour},
	}
}

// Load reads a YAML file over the defaults. Unknown keys are an error, so a
// typo does not silently fall back to a default.
func Load(path string) (Config, error) {
	c := Default()
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Finish fills derived defaults (paths under DataDir) and validates.
func (c *Config) Finish() error {
	if c.DataDir == "" {
		return errors.New("data_dir must not be empty")
	}
	if c.TFTP.Root == "" {
		c.TFTP.Root = filepath.Join(c.DataDir, "tftp")
	}
	if c.Boot.SignedCache == "" {
		c.Boot.SignedCache = filepath.Join(c.DataDir, "cache", "signed")
	}
	if c.Imaging.Repo == "" {
		c.Imaging.Repo = filepath.Join(c.DataDir, "images")
	}
	if c.Store.Path == "" {
		c.Store.Path = filepath.Join(c.DataDir, "preboot.db")
	}
	if c.HTTP.AdminSocket != "" && !filepath.IsAbs(c.HTTP.AdminSocket) {
		c.HTTP.AdminSocket = filepath.Join(c.DataDir, c.HTTP.AdminSocket)
	}
	var errs []error
	if c.Jobs.PendingTTL < time.Second || c.Jobs.StaleAfter < time.Second {
		errs = append(errs, fmt.Errorf("jobs.pending_ttl %s, jobs.stale_after %s: both must be at least 1s", c.Jobs.PendingTTL, c.Jobs.StaleAfter))
	}
	switch c.Store.Driver {
	case "sqlite":
	case "postgres":
		if c.Store.DSN == "" {
			errs = append(errs, errors.New("store.dsn: required with store.driver postgres (e.g. postgres://user:pass@host/db)"))
		}
	default:
		errs = append(errs, fmt.Errorf("store.driver %q: want sqlite or postgres", c.Store.Driver))
	}
	switch strings.ToLower(c.Menu.Mode) {
	case "always", "hotkey", "never":
		c.Menu.Mode = strings.ToLower(c.Menu.Mode)
	default:
		errs = append(errs, fmt.Errorf("menu.mode %q: want always, hotkey or never", c.Menu.Mode))
	}
	if c.Menu.Timeout < 0 || c.Menu.Timeout > time.Hour {
		errs = append(errs, fmt.Errorf("menu.timeout %s: want between 0 and 1h", c.Menu.Timeout))
	}
	switch c.Boot.LocalBootBIOS {
	case "sanboot", "exit":
	default:
		errs = append(errs, fmt.Errorf("boot.local_boot_bios %q: want sanboot or exit", c.Boot.LocalBootBIOS))
	}
	if c.ServerIP != "" {
		a, err := netip.ParseAddr(c.ServerIP)
		if err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("server_ip %q: want an IPv4 address", c.ServerIP))
		}
	}
	if c.Interface != "" {
		if _, err := net.InterfaceByName(c.Interface); err != nil {
			errs = append(errs, fmt.Errorf("interface %q: %w", c.Interface, err))
		}
	}
	for name, addr := range map[string]string{"tftp.listen": c.TFTP.Listen, "http.listen": c.HTTP.Listen, "http.tls_listen": c.HTTP.TLSListen,
		"proxydhcp.dhcp_listen": c.ProxyDHCP.DHCPListen, "proxydhcp.pxe_listen": c.ProxyDHCP.PXEListen} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want HOST:PORT (%w)", name, addr, err))
		}
	}
	if (c.HTTP.TLSCert == "") != (c.HTTP.TLSKey == "") {
		errs = append(errs, errors.New("http.tls_cert and http.tls_key: give both (or neither, for a generated self-signed certificate)"))
	}
	for _, h := range c.HTTP.Hosts {
		if h == "" || strings.ContainsAny(h, "/: \t") {
			errs = append(errs, fmt.Errorf("http.hosts: %q: want a host name without scheme or port", h))
		}
	}
	if c.TFTP.MaxBlockSize < 512 || c.TFTP.MaxBlockSize > 65464 {
		errs = append(errs, fmt.Errorf("tftp.max_blksize %d: want 512..65464", c.TFTP.MaxBlockSize))
	}
	if c.TFTP.MaxWindow < 1 || c.TFTP.MaxWindow > 64 {
		errs = append(errs, fmt.Errorf("tftp.max_windowsize %d: want 1..64", c.TFTP.MaxWindow))
	}
	errs = append(errs, c.checkLimits()...)
	errs = append(errs, c.DHCP.check()...)
	errs = append(errs, c.DHCP6.check()...)
	errs = append(errs, c.Wake.check()...)
	errs = append(errs, c.Upstream.check()...)
	return errors.Join(errs...)
}

// checkLimits validates the resource limits and retention settings.
func (c *Config) checkLimits() []error {
	var errs []error
	if c.TFTP.MaxTransfers < 1 {
		errs = append(errs, fmt.Errorf("tftp.max_transfers %d: want at least 1", c.TFTP.MaxTransfers))
	}
	if c.TFTP.MaxTransfersPerClient < 1 {
		errs = append(errs, fmt.Errorf("tftp.max_transfers_per_client %d: want at least 1", c.TFTP.MaxTransfersPerClient))
	}
	for name, d := range map[string]time.Duration{"http.read_timeout": c.HTTP.ReadTimeout, "http.write_timeout": c.HTTP.WriteTimeout,
		"http.idle_timeout": c.HTTP.IdleTimeout, "retention.events": c.Retention.Events, "retention.jobs": c.Retention.Jobs} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s: want a positive duration (or 0)", name, d))
		}
	}
	if c.HTTP.MaxEventStreams < 0 || c.HTTP.MaxEventStreamsPerClient < 0 || c.Retention.MaxEvents < 0 {
		errs = append(errs, errors.New("http.max_event_streams, http.max_event_streams_per_client, retention.max_events: want 0 (no cap) or more"))
	}
	for _, sn := range c.ProxyDHCP.Subnets {
		if p, err := netip.ParsePrefix(sn); err != nil || !p.Addr().Is4() {
			errs = append(errs, fmt.Errorf("proxydhcp.subnets: %q: want an IPv4 CIDR such as 10.0.0.0/24", sn))
		}
	}
	for _, name := range c.ProxyDHCP.Interfaces {
		if name == "" || strings.ContainsAny(name, "/ \t") {
			errs = append(errs, fmt.Errorf("proxydhcp.interfaces: %q: want an interface name", name))
		}
	}
	return errs
}
