package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/api"
)

// AdminGroup is the OS group whose members administer the server through
// the admin socket (besides root and the server's own user).
const AdminGroup = "preboot"

// adminSocket is the local administration socket: who connects is known
// from the kernel (SO_PEERCRED), as with PostgreSQL's peer
// authentication or Docker's socket.
type adminSocket struct {
	path     string
	selfUID  int
	groupGID int // -1: no group "preboot" on this machine
	log      *slog.Logger
}

// listenAdminSocket creates the socket at path: mode 0660 and group
// "preboot" when that group exists (and the server may give the socket
// to it), else 0600. A stale socket left by a crash is replaced; a live
// one (another server) is an error.
func listenAdminSocket(path string, log *slog.Logger) (*adminSocket, net.Listener, error) {
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		return nil, nil, fmt.Errorf("admin socket %s: the path is longer than a unix socket's %d bytes: set http.admin_socket (--admin-socket) to a shorter absolute path",
			path, len(unix.RawSockaddrUnix{}.Path)-1)
	}
	s := &adminSocket{path: path, selfUID: os.Getuid(), groupGID: -1, log: log}
	if g, err := user.LookupGroup(AdminGroup); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			s.groupGID = gid
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, nil, fmt.Errorf("admin socket %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, nil, fmt.Errorf("admin socket %s: another server is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, nil, fmt.Errorf("admin socket %s: remove the stale socket: %w", path, err)
		}
	}
	// Whoever connects before the chmod below is still judged by its
	// credentials: the mode is a first fence, SO_PEERCRED the check.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	mode := os.FileMode(0o600)
	if s.groupGID >= 0 {
		if err := os.Chown(path, -1, s.groupGID); err != nil {
			log.Warn("admin socket: cannot give it to group "+AdminGroup+"; only root and the server's user can use it", "path", path, "err", err)
			s.groupGID = -1
		} else {
			mode = 0o660
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return s, ln, nil
}

// connContext puts the connecting process's identity in the context of
// every request on the connection.
func (s *adminSocket) connContext(ctx context.Context, c net.Conn) context.Context {
	return api.WithPeer(ctx, s.peer(c))
}

// peer reads SO_PEERCRED and decides whether that process is an admin.
func (s *adminSocket) peer(c net.Conn) api.Peer {
	p := api.Peer{UID: -1, GID: -1, Why: "its identity is unknown"}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return p
	}
	cred, err := peerCred(uc)
	if err != nil {
		s.log.Warn("admin socket: SO_PEERCRED", "err", err)
		return p
	}
	p.UID, p.GID, p.PID = int(cred.Uid), int(cred.Gid), int(cred.Pid)
	p.User = "uid " + strconv.Itoa(p.UID)
	if u, err := user.LookupId(strconv.Itoa(p.UID)); err == nil {
		p.User = u.Username
	}
	switch {
	case p.UID == 0, p.UID == s.selfUID:
		p.Allowed = true
	case s.groupGID >= 0 && s.inGroup(p):
		p.Allowed = true
	default:
		p.Why = fmt.Sprintf("user %s (uid %d) is not root, not the server's user and not in group %s: "+
			"run the command as root, add the user to group %s (and restart the server if the group is new), "+
			"or use --server https://HOST:8443 with an admin token", p.User, p.UID, AdminGroup, AdminGroup)
	}
	return p
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// inGroup reports whether the peer has the admin group as its primary
// or a supplementary group: the process's own groups (/proc/PID/status),
// else the groups its user is listed in.
func (s *adminSocket) inGroup(p api.Peer) bool {
	if p.GID == s.groupGID {
		return true
	}
	if p.PID > 0 {
		if gids, err := procGroups(p.PID, p.UID); err == nil {
			for _, g := range gids {
				if g == s.groupGID {
					return true
				}
			}
			return false
		}
	}
	u, err := user.LookupId(strconv.Itoa(p.UID))
	if err != nil {
		return false
	}
	ids, err := u.GroupIds()
	if err != nil {
		return false
	}
	for _, id := range ids {
		if id == strconv.Itoa(s.groupGID) {
			return true
		}
	}
	return false
}

// procGroups reads the supplementary groups of a process from
// /proc/PID/status, checking that the process still has the peer's real
// uid (a pid reused in between would not).
func procGroups(pid, uid int) ([]int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var gids []int
	uidOK := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		switch k {
		case "Uid":
			uidOK = len(fs) > 0 && fs[0] == strconv.Itoa(uid)
		case "Groups":
			for _, f := range fs {
				if n, err := strconv.Atoi(f); err == nil {
					gids = append(gids, n)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !uidOK {
		return nil, errors.New("process changed")
	}
	return gids, nil
}

// NewAdminSocket creates the admin socket at path and an HTTP server that
// serves h on it, as Run does: every request carries its client's OS
// identity (api.PeerFrom), and clients that are not root, the server's
// own user or a member of group "preboot" get 403 on every route. The
// caller runs srv.Serve(ln) and closes srv.
func NewAdminSocket(path string, h http.Handler, log *slog.Logger) (srv *http.Server, ln net.Listener, err error) {
	s, ln, err := listenAdminSocket(path, log)
	if err != nil {
		return nil, nil, err
	}
	srv = &http.Server{
		Handler:           peerGate(h),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       s.connContext,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("admin socket listening", "path", path, "group", AdminGroup, "group_access", s.groupGID >= 0)
	return srv, ln, nil
}

// peerGate refuses every request of a peer the socket does not accept,
// whatever route it asks for (403 with the reason).
func peerGate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := api.PeerFrom(r.Context()); ok && !p.Allowed {
			writeJSONError(w, http.StatusForbidden, fmt.Sprintf("%s: %s", api.ErrPeerDenied, p.Why))
			return
		}
		next.ServeHTTP(w, r)
	})
}
