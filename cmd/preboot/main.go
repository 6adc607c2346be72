// Command preboot is the Preboot network-boot server, its admin tool and,
// inside the imaging environment, the imaging agent (as pid 1).
package main

import (
	"os"

	"github.com/preboot/preboot/cli"
)

func main() {
	if os.Getpid() == 1 {
		os.Exit(cli.RunInit())
	}
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
