// Command initagent is the test /init for envbuild's boot test: it runs
// initenv as pid 1 and, instead of the real agent, prints what the
// environment found and powers the VM off.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/preboot/preboot/agent"
	"github.com/preboot/preboot/initenv"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "initagent: only runs as pid 1 (the initrd's /init)")
		os.Exit(2)
	}
	handoff := func(ctx context.Context, env *initenv.Env) error {
		var mods []string
		if b, err := os.ReadFile("/proc/modules"); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) > 0 {
					mods = append(mods, f[0])
				}
			}
		}
		sort.Strings(mods)
		var blocks []string
		if ents, err := os.ReadDir("/sys/block"); err == nil {
			for _, e := range ents {
				blocks = append(blocks, e.Name())
			}
		}
		fmt.Printf("PREBOOT-ENV-MODULES %s\n", strings.Join(mods, ","))
		fmt.Printf("PREBOOT-ENV-BLOCK %s\n", strings.Join(blocks, ","))
		fmt.Printf("PREBOOT-ENV-PARAMS server=%s token=%s job=%s iface=%s\n", env.Server, env.Token, env.Job, env.Interface)
		// A script bundle's path: the agent runs a script with /bin/sh
		// (busybox) and the basic tools, with the PATH it sets up.
		script := "echo \"shell=$0 path=$PATH\"\necho hello | sed s/hello/sed-works/\n" +
			"dd if=/dev/zero bs=1024 count=3 2>/dev/null | wc -c | awk '{print \"dd-bytes=\" $1}'\n" +
			"for t in cat grep mount blkdiscard wget sleep timeout; do command -v $t >/dev/null || echo missing=$t; done\n"
		err := agent.RunScript(ctx, agent.ScriptOptions{Script: script, Timeout: 30 * time.Second,
			Output: func(l string) { fmt.Printf("PREBOOT-ENV-SCRIPT %s\n", l) }})
		fmt.Printf("PREBOOT-ENV-SCRIPT-RESULT %v\n", err)
		// What imaging needs: the device-mapper control node, /tmp sized
		// for spills, Debian's tools with their libraries.
		if fi, err := os.Stat("/dev/mapper/control"); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Println("PREBOOT-ENV-DM control")
		}
		var st unix.Statfs_t
		var si unix.Sysinfo_t
		if unix.Statfs("/tmp", &st) == nil && unix.Sysinfo(&si) == nil && st.Type == unix.TMPFS_MAGIC {
			fmt.Printf("PREBOOT-ENV-TMP permille=%d\n", uint64(st.Blocks)*uint64(st.Bsize)*1000/(uint64(si.Totalram)*uint64(si.Unit)))
		}
		for _, c := range [][]string{{"/usr/sbin/resize2fs"}, {"/usr/sbin/ntfsresize", "--version"}, {"/usr/sbin/fatresize", "--help"}} {
			out, _ := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput()
			first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
			fmt.Printf("PREBOOT-ENV-TOOL %s: %s\n", filepath.Base(c[0]), first)
		}
		fmt.Printf("PREBOOT-ENV-OK %s\n", env.Addr.Addr())
		env.After = initenv.PowerOff
		return nil
	}
	err := initenv.RunWithOptions(context.Background(), nil, handoff, initenv.Options{
		RebootDelay: 2 * time.Second,
		DHCPTimeout: 60 * time.Second,
	})
	fmt.Println("PREBOOT-ENV-RUN-RETURNED", err)
	os.Exit(1)
}
