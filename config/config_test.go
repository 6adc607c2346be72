package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if c.TFTP.Root != filepath.Join("var", "tftp") || c.Store.Path != filepath.Join("var", "preboot.db") {
		t.Fatalf("derived paths: %q %q", c.TFTP.Root, c.Store.Path)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("data_dir: /srv/preboot\nmenu:\n  timeout: 10s\ntftp:\n  max_windowsize: 16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/preboot" || c.Menu.Timeout != 10*time.Second || c.TFTP.MaxWindow != 16 || c.HTTP.Listen != ":8080" {
		t.Fatalf("loaded: %+v", c)
	}
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(empty); err != nil || c.DataDir != "./var" {
		t.Fatalf("empty file: %v %+v", err, c)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestFinishReportsEveryProblem(t *testing.T) {
	c := Default()
	c.Menu.Mode = "x"
	c.TFTP.Listen = "nope"
	c.TFTP.MaxWindow = 0
	c.Boot.LocalBootBIOS = "grub"
	c.Interface = "preboot-no-such-if"
	err := c.Finish()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"menu.mode", "tftp.listen", "tftp.max_windowsize", "boot.local_boot_bios", "interface"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
