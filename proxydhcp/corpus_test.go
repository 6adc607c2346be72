package proxydhcp

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// checkOrWriteCorpus checks that a fuzz corpus file exists and holds one
// []byte value; with PREBOOT_WRITE_FUZZ_CORPUS=1 it (re)writes it with b.
func checkOrWriteCorpus(path string, b []byte) error {
	if os.Getenv("PREBOOT_WRITE_FUZZ_CORPUS") == "1" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return os.WriteFile(path, []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(b))+")\n"), 0o644)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("seed corpus: %w (regenerate with PREBOOT_WRITE_FUZZ_CORPUS=1)", err)
	}
	if !strings.HasPrefix(string(data), "go test fuzz v1\n[]byte(") {
		return fmt.Errorf("seed corpus %s: not a go fuzz v1 []byte file", path)
	}
	return nil
}
