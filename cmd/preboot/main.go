// Command preboot is the Preboot network-boot server and its admin tool.
package main

import (
	"os"

	"github.com/preboot/preboot/cli"
)

func main() {
	os.Exit(cli.Execute(os.Args[1:], os.Stdout, os.Stderr))
}
