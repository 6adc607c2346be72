// Command initagent is the test /init for envbuild's boot test: it runs
// initenv as pid 1 and, instead of the real agent, prints what the
// environment found and powers the VM off.
package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

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
