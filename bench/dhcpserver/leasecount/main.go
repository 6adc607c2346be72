// Command leasecount prints how many leases a Preboot SQLite database holds
// (bench/dhcpserver/run.sh).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/preboot/preboot/store"
	"github.com/preboot/preboot/store/sqlstore"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: leasecount DB")
		os.Exit(2)
	}
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "leasecount:", err)
		os.Exit(1)
	}
	defer st.Close()
	n := 0
	for off := 0; ; off += 10000 {
		page, err := st.LeaseList(ctx, store.LeaseFilter{Page: store.Page{Limit: 10000, Offset: off}})
		if err != nil {
			fmt.Fprintln(os.Stderr, "leasecount:", err)
			os.Exit(1)
		}
		n += len(page)
		if len(page) < 10000 {
			break
		}
	}
	fmt.Println(n)
}
