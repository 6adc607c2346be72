// Package server assembles Preboot's daemons — proxyDHCP, TFTP and HTTP
// (boot policy, boot files, admin API, metrics) — around one store and one
// boot policy, and runs them until the context ends.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/preboot/preboot/api"
	"github.com/preboot/preboot/bootfiles"
	"github.com/preboot/preboot/config"
	"github.com/preboot/preboot/console"
	"github.com/preboot/preboot/hostcheck"
	"github.com/preboot/preboot/image"
	"github.com/preboot/preboot/image/httpstore"
	"github.com/preboot/preboot/jobs"
	"github.com/preboot/preboot/mcast"
	"github.com/preboot/preboot/peers"
	"github.com/preboot/preboot/policy"
	"github.com/preboot/preboot/proxydhcp"
	"github.com/preboot/preboot/session"
	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
	"github.com/preboot/preboot/tftp"
	"github.com/preboot/preboot/wake"
)

// Version is set by the build (-ldflags "-X ...server.Version=...").
var Version = "dev"

// Run starts every enabled daemon and blocks until ctx is done or one of
// them fails.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if err := cfg.Finish(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	if cfg.Menu.Mode == "hotkey" && !policy.ValidHotkey(cfg.Menu.Hotkey) {
		return fmt.Errorf("invalid configuration: menu.hotkey %q: want a letter, a digit, ctrl-X, esc or space", cfg.Menu.Hotkey)
	}
	if err := secureDataDir(cfg.DataDir, cfg.HTTP.AdminSocket, cfg.TFTP.Root, log); err != nil {
		return err
	}
	db, err := OpenStore(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer db.Close()
	events := &api.Notifier{}
	st := api.NotifyingStore{Store: db, N: events}
	if err := firstAdmin(ctx, st, cfg, os.Stderr, log); err != nil {
		return err
	}

	if cfg.Boot.CopyDebianFiles {
		if _, err := bootfiles.Stage(ctx, cfg.TFTP.Root, bootfiles.Debian(), log); err != nil {
			return err
		}
	} else if err := os.MkdirAll(cfg.TFTP.Root, 0o755); err != nil {
		return fmt.Errorf("create TFTP root: %w", err)
	}

	serverIP, err := advertisedIP(cfg)
	if err != nil {
		return err
	}
	_, httpPort, _ := net.SplitHostPort(cfg.HTTP.Listen)

	repo, err := OpenRepo(cfg, st, log)
	if err != nil {
		return err
	}
	js := &jobs.Service{Store: st, Logger: log.With("component", "jobs"), PendingTTL: cfg.Jobs.PendingTTL, StaleAfter: cfg.Jobs.StaleAfter}
	js.ResolveImage = pinImage(repo)

	// HTTPS (before the policy, which tells agents where it is and its pin).
	var tlsLn net.Listener
	var cert serverCert
	if cfg.HTTP.TLSListen != "" {
		if cert, err = loadOrCreateCert(cfg, log); err != nil {
			return err
		}
		if tlsLn, err = net.Listen("tcp", cfg.HTTP.TLSListen); err != nil {
			return fmt.Errorf("https: listen %s: %w", cfg.HTTP.TLSListen, err)
		}
		defer tlsLn.Close()
		log.Info("https listening", "addr", tlsLn.Addr().String(), "fingerprint", cert.fingerprint, "cert", cert.certFile, "self_signed", cert.generated)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pol := &policy.Engine{
		Store:           st,
		Boot:            cfg.Boot,
		DefaultSettings: policy.SettingsFromConfig(cfg.Menu),
		Logger:          log.With("component", "policy"),
		TFTPRoot:        cfg.TFTP.Root,
		HTTPPort:        httpPort,
		Jobs:            js,
		Imaging:         cfg.Imaging,
	}

	if tlsLn != nil {
		_, tlsPort, _ := net.SplitHostPort(tlsLn.Addr().String())
		pol.AgentServer = agentServer(tlsPort)
		pol.AgentFingerprint = cert.fingerprint
	}
	if pol.PeerServers, err = peerServers(ctx, cfg.HTTP.PeerServers, pol.AgentFingerprint, log); err != nil {
		return err
	}
	// Devices of a site's subnets fetch their image data from its server.
	pol.ImageServer = siteImageServer(st, log.With("component", "sites"))

	status := newStatus(cfg, st, repo)
	if tlsLn != nil {
		status.tls(tlsLn.Addr().String(), cert.fingerprint)
	}
	g, ctx := errgroup.WithContext(ctx)
	if cfg.Boot.CopyDebianFiles {
		g.Go(func() error {
			stageSigned(ctx, cfg, log.With("component", "bootfiles"))
			return nil
		})
	}
	if cfg.Imaging.GCInterval > 0 {
		g.Go(func() error {
			runRepoGC(ctx, repo, cfg.Imaging.GCInterval, log.With("component", "images"))
			return nil
		})
	}
	// A site server keeps a verified replica of its upstream's images.
	rep, upstreamTokens, err := newReplicator(cfg, repo, log.With("component", "replica"))
	if err != nil {
		return err
	}
	if rep != nil {
		reg.MustRegister(rep)
		status.replication, status.upstreamTokens = rep, upstreamTokens
		g.Go(func() error {
			rep.Run(ctx)
			return nil
		})
	}
	g.Go(func() error { return runRetention(ctx, st, cfg.Retention, log.With("component", "retention")) })
	// Scheduled assignments that asked for it wake their devices when
	// they come due (claimed in the store: once across servers).
	waker, err := newWaker(cfg, st, reg, log.With("component", "wake"))
	if err != nil {
		return err
	}
	g.Go(func() error {
		(&wake.Scheduler{Service: waker, Interval: cfg.Wake.Interval}).Run(ctx)
		return nil
	})
	// Jobs whose device or agent went silent (or whose server died
	// mid-job) expire as failed, and their tokens with them.
	g.Go(func() error {
		js.RunExpiry(ctx, min(cfg.Jobs.StaleAfter, cfg.Jobs.PendingTTL, time.Minute)/2)
		return nil
	})
	if cfg.TFTP.Enabled {
		ts := &tftp.Server{
			Root:         cfg.TFTP.Root,
			Generator:    pol,
			Logger:       log.With("component", "tftp"),
			Metrics:      tftp.NewMetrics(reg),
			MaxBlockSize: cfg.TFTP.MaxBlockSize,
			MaxWindow:    cfg.TFTP.MaxWindow,

			MaxTransfers:          cfg.TFTP.MaxTransfers,
			MaxTransfersPerClient: cfg.TFTP.MaxTransfersPerClient,
		}
		// "udp": dual stack for ":69" (PXE over IPv6 downloads by TFTP too).
		conn, err := net.ListenPacket("udp", cfg.TFTP.Listen)
		if err != nil {
			return fmt.Errorf("tftp: listen %s: %w", cfg.TFTP.Listen, err)
		}
		log.Info("tftp listening", "addr", conn.LocalAddr().String(), "root", cfg.TFTP.Root)
		status.up(serviceTFTP, conn.LocalAddr().String())
		g.Go(func() error {
			defer status.down(serviceTFTP)
			return ts.Serve(ctx, conn)
		})
	}
	ds, dsConn, err := newDHCPServer(ctx, cfg, db, st, pol, serverIP, reg, log.With("component", "dhcpserver"))
	if err != nil {
		return err
	}
	if ds != nil {
		status.up(serviceDHCPServer, dsConn.LocalAddr().String())
		g.Go(func() error {
			defer status.down(serviceDHCPServer)
			return ds.Serve(ctx, dsConn)
		})
	}
	d6, d6Conn, err := newDHCP6Server(cfg, db, pol, log.With("component", "dhcp6"))
	if err != nil {
		return err
	}
	if d6 != nil {
		status.up(serviceDHCP6, d6Conn.LocalAddr().String())
		g.Go(func() error {
			defer status.down(serviceDHCP6)
			return d6.Serve(ctx, d6Conn)
		})
	}
	if err := startDHCP6Proxy(ctx, g, cfg, pol, status, log.With("component", "dhcp6")); err != nil {
		return err
	}
	if cfg.ProxyDHCP.Enabled {
		ps := &proxydhcp.Server{
			Booter:    pol,
			Interface: cfg.Interface,
			ServerIP:  serverIP,
			Logger:    log.With("component", "proxydhcp"),
			Metrics:   proxydhcp.NewMetrics(reg),
			DHCPAddr:  cfg.ProxyDHCP.DHCPListen,
			PXEAddr:   cfg.ProxyDHCP.PXEListen,
			// With the embedded DHCP server on, port 67 is its own.
			PXEOnly: cfg.ProxyDHCP.DHCPListen == "" || cfg.DHCP.Enabled(),

			Interfaces: cfg.ProxyDHCP.Interfaces,
		}
		if ps.Subnets, err = proxySubnets(cfg.ProxyDHCP); err != nil {
			return err
		}
		dhcpConn, pxeConn, addrs, err := listenProxyDHCP(ctx, cfg)
		if err != nil {
			return err
		}
		log.Info("proxydhcp listening", "dhcp", cfg.ProxyDHCP.DHCPListen, "pxe", cfg.ProxyDHCP.PXEListen, "interface", cfg.Interface)
		status.up(serviceProxyDHCP, addrs...)
		g.Go(func() error {
			defer status.down(serviceProxyDHCP)
			return ps.Serve(ctx, dhcpConn, pxeConn)
		})
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http: listen %s: %w", cfg.HTTP.Listen, err)
	}
	status.up(serviceHTTP, ln.Addr().String())
	tracker := peers.NewTracker(peers.TrackerConfig{Logger: log.With("component", "peers")})
	mc, err := newMulticast(cfg, repo, st, tracker, log.With("component", "multicast"))
	if err != nil {
		return err
	}
	if mc != nil {
		g.Go(func() error { return mc.Run(ctx) })
	}
	if mc != nil {
		reg.MustRegister(mcast.NewCollector(mc.List))
	}
	h := handler(st, pol, js, repo, cfg, reg, events, status, mc, log)
	plain := h
	if tlsLn != nil {
		// Plain HTTP keeps only what firmware that cannot do TLS fetches.
		_, tlsPort, _ := net.SplitHostPort(tlsLn.Addr().String())
		plain = plainHTTPOnly(h, tlsPort)
	}
	hs := &http.Server{
		// firmwareSlashes before plainHTTPOnly: /files//ipxe.efi is a
		// firmware path too.
		Handler:           firmwareSlashes(plain),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	servers := []*http.Server{hs}
	limits := newHTTPLimits(cfg.HTTP)
	limits.apply(hs)
	log.Info("http listening", "addr", ln.Addr().String(), "version", Version)
	g.Go(func() error {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	if tlsLn != nil {
		ths := &http.Server{
			Handler:           h,
			TLSConfig:         cert.tlsConfig(),
			ReadHeaderTimeout: 10 * time.Second,
			BaseContext:       func(net.Listener) context.Context { return ctx },
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		servers = append(servers, ths)
		limits.apply(ths)
		g.Go(func() error {
			if err := ths.ServeTLS(tlsLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("https: %w", err)
			}
			return nil
		})
	}
	if cfg.HTTP.AdminSocket != "" {
		shs, sln, err := NewAdminSocket(cfg.HTTP.AdminSocket, h, log.With("component", "admin-socket"))
		if err != nil {
			return err
		}
		shs.BaseContext = func(net.Listener) context.Context { return ctx }
		servers = append(servers, shs)
		limits.apply(shs)
		g.Go(func() error {
			if err := shs.Serve(sln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("admin socket: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var errs []error
		for _, s := range servers {
			errs = append(errs, s.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// OpenStore opens the configured database (migrating it).
func OpenStore(ctx context.Context, c config.Store) (store.Store, error) {
	switch c.Driver {
	case "postgres":
		return sqlstore.Open(ctx, "postgres", c.DSN)
	default:
		return sqlstore.Open(ctx, "sqlite", c.Path)
	}
}

// Handler is the HTTP side of Preboot. events (optional) wakes the API's
// event streams. Its /api/v1/status reports the configured listen
// addresses (Run reports the real ones).
func Handler(st store.Store, pol *policy.Engine, js *jobs.Service, repo *image.Repo, cfg config.Config, reg *prometheus.Registry, events *api.Notifier, log *slog.Logger) http.Handler {
	return handler(st, pol, js, repo, cfg, reg, events, newStatus(cfg, st, repo), nil, log)
}

func handler(st store.Store, pol *policy.Engine, js *jobs.Service, repo *image.Repo, cfg config.Config, reg *prometheus.Registry, events *api.Notifier, status *serverStatus, mc *mcast.Manager, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /boot.ipxe", newBootMetrics(reg).handler(pol))
	mux.Handle("GET /files/", http.StripPrefix("/files/", fileServer(cfg.TFTP.Root)))
	// The manual preboot medium (docs/manual-boot.md) and where a machine
	// booted from it asks for its work.
	mux.Handle("GET /files/"+MediaFile, newMediaISO(pol, cfg.TFTP.Root, cfg.Imaging.Kernel, cfg.Imaging.Initrd, cfg.DataDir, log.With("component", "media")))
	mux.Handle("POST "+policy.MediaPath, pol.MediaHandler())
	// The web console's sessions: a third way into the admin API (after
	// tokens; before loopback trust when the request carries a session).
	hosts := hostcheck.New(cfg.HTTP.Hosts, true)
	sessions := session.New(st, log.With("component", "session"))
	sessions.Hosts = hosts
	auth := &api.Auth{Store: st, TrustLoopback: cfg.HTTP.TrustLoopback, Logger: log.With("component", "auth"), Sessions: sessions, Hosts: hosts}
	waker, err := newWaker(cfg, st, reg, log.With("component", "wake"))
	if err != nil {
		// Finish checked the subnets: not reached with a loaded config.
		log.Error("wake-on-lan off", "err", err)
		waker = nil
	}
	admin := api.New(api.Options{
		Store: st, Policy: pol, Jobs: js, Logger: log.With("component", "api"), Auth: auth, Events: events, Version: Version,
		Status: status.Info, EventStreams: api.NewStreamLimiter(cfg.HTTP.MaxEventStreams, cfg.HTTP.MaxEventStreamsPerClient),
		ImageExists: func(name string) bool { _, err := repo.Manifest(name); return err == nil },
		Sessions:    mc,
		Waker:       waker,
		Replication: status.replication,
	})
	mux.HandleFunc("POST "+session.LoginPath, sessions.Login)
	mux.HandleFunc("POST "+session.LogoutPath, sessions.Logout)
	// The console's pages: the login page and static assets are public,
	// every other page goes through sessions.Require (GETs without a
	// session are sent to the login page; changes need the CSRF token).
	mux.Handle("/console/", console.New(console.Options{Version: Version, Logger: log.With("component", "console"), Require: sessions.Require}))
	mux.Handle("/api/v1/", admin)
	mux.Handle("/api/v1/agent/", js.AgentHandler())
	if mc != nil {
		mux.Handle(mcast.PathPrefix, mc.Handler(multicastAuth(js, auth)))
	} else {
		mux.HandleFunc(mcast.PathPrefix, multicastOff)
	}
	images := &httpstore.Handler{Repo: repo, Logger: log.With("component", "images"), Access: imageAccess}
	for _, p := range images.Prefixes() {
		mux.Handle(p, imageAuth(images, js, auth, st, repo, status.upstreamTokens))
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", status.ready) // docs/observability.md
	registerStoreCollector(reg, st, log.With("component", "metrics"))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			http.Redirect(w, r, "/console/", http.StatusSeeOther) // a browser: the web console
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "Preboot %s\n\nweb console: /console/\nboot policy: /boot.ipxe\nboot files:  /files/\nadmin API:   /api/v1/ (OpenAPI: /api/v1/openapi.json)\nmetrics:     /metrics\n", Version)
	})
	// Names: console, API and images answer only to this server's names
	// (DNS rebinding); firmware's paths and the admin socket to anything.
	checked := hosts.Middleware(mux, func(r *http.Request) bool {
		_, local := api.PeerFrom(r.Context())
		return local || r.URL.Path == "/boot.ipxe" || strings.HasPrefix(r.URL.Path, "/files/") || r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
	})
	return accessLog(firmwareSlashes(checked), log.With("component", "http"))
}

// fileServer serves the TFTP root over HTTP, confined to it (os.Root
// refuses symlinks that leave it) and without directory listings.
func fileServer(root string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rt, err := os.OpenRoot(root)
		if err != nil {
			http.Error(w, "boot files unavailable", http.StatusServiceUnavailable)
			return
		}
		defer rt.Close()
		name := filepath.Clean("/" + r.URL.Path)[1:]
		if name == "" {
			http.NotFound(w, r)
			return
		}
		// O_NONBLOCK: a FIFO must not block the handler waiting for a
		// writer; only regular files are served (below).
		f, err := rt.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				http.NotFound(w, r)
				return
			}
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }
func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Flush lets streaming handlers (the API's event stream) flush through
// the access log.
func (s *statusWriter) Flush() {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ReadFrom keeps the underlying writer's fast path (sendfile) for io.Copy.
func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := io.Copy(s.ResponseWriter, r)
	s.bytes += n
	return n, err
}

func accessLog(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		log.InfoContext(r.Context(), "http request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"bytes", sw.bytes, "duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

// advertisedIP is the configured server address, or the interface's
// first IPv4 address when an interface is set; nil lets proxyDHCP use the
// address each request arrived on.
func advertisedIP(cfg config.Config) (net.IP, error) {
	if cfg.ServerIP != "" {
		return net.ParseIP(cfg.ServerIP).To4(), nil
	}
	if cfg.Interface == "" {
		return nil, nil
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", cfg.Interface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", cfg.Interface, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	if cfg.DHCP6.IPv6Boot() {
		return nil, nil // an IPv6-only boot network
	}
	return nil, fmt.Errorf("interface %s has no IPv4 address", cfg.Interface)
}

// listenProxyDHCP binds proxyDHCP's sockets as proxydhcp.ListenAndServe
// would (no DHCP port when dhcp_listen is empty), so that Run knows the
// addresses and fails at once when a port is taken.
func listenProxyDHCP(ctx context.Context, cfg config.Config) (dhcpConn, pxeConn net.PacketConn, addrs []string, err error) {
	pxeAddr := cfg.ProxyDHCP.PXEListen
	if pxeAddr == "" {
		pxeAddr = fmt.Sprintf(":%d", proxydhcp.PXEPort)
	}
	if cfg.ProxyDHCP.DHCPListen != "" && !cfg.DHCP.Enabled() {
		c, err := proxydhcp.ListenUDP(ctx, cfg.Interface, cfg.ProxyDHCP.DHCPListen)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("proxydhcp: %w", err)
		}
		dhcpConn = c
		addrs = append(addrs, c.LocalAddr().String())
	}
	c, err := proxydhcp.ListenUDP(ctx, cfg.Interface, pxeAddr)
	if err != nil {
		if dhcpConn != nil {
			dhcpConn.Close()
		}
		return nil, nil, nil, fmt.Errorf("proxydhcp: %w", err)
	}
	return dhcpConn, c, append(addrs, c.LocalAddr().String()), nil
}

// InitialPasswordFile is where the first console password is written
// (mode 0600, in the data directory), as Jenkins does: never on stderr
// or in the log.
const InitialPasswordFile = "initial-admin-password"

// firstAdmin creates the console user "admin" with a random password when
// the store has none, writes the password to DATA_DIR/initial-admin-password
// (mode 0600) and says on w where it is (the log says the same).
func firstAdmin(ctx context.Context, st store.Store, cfg config.Config, w io.Writer, log *slog.Logger) error {
	pw, err := session.EnsureFirstAdmin(ctx, st)
	if err != nil {
		return fmt.Errorf("web console: %w", err)
	}
	if pw == "" {
		return nil
	}
	file := filepath.Join(cfg.DataDir, InitialPasswordFile)
	if err := writeFileAtomic(file, []byte(pw+"\n"), 0o600); err != nil {
		return fmt.Errorf("web console: write the first password: %w", err)
	}
	if _, err := st.AddEvent(ctx, store.Event{Kind: store.EventAdmin, Actor: "system",
		Message: "console user " + session.FirstAdmin + " created with a random password at the first start (in " + file + ")"}); err != nil {
		return fmt.Errorf("web console: %w", err)
	}
	scheme, port := "https", "8443"
	if cfg.HTTP.TLSListen != "" {
		_, port, _ = net.SplitHostPort(cfg.HTTP.TLSListen)
	} else {
		scheme = "http"
		_, port, _ = net.SplitHostPort(cfg.HTTP.Listen)
	}
	fmt.Fprintf(w, "\nPreboot web console: created the first user %q; its password is in\n\n    %s\n\n"+
		"(readable by this server's user only). Log in at %s://SERVER:%s%s and change it with\n"+
		"`preboot admin passwd %s` on this host, then delete the file.\n\n",
		session.FirstAdmin, file, scheme, port, session.DefaultNext, session.FirstAdmin)
	log.Warn("created the first web console user with a random password; it is in the file, change it with `preboot admin passwd admin`",
		"user", session.FirstAdmin, "file", file)
	return nil
}
