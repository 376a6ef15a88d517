// Command mkinitramfs writes rscvm's reproducible test initramfs.
//
//	go run ./guestimages/initramfs/cmd/mkinitramfs -agent out/agent \
//	    -modules out/debian/modules -o out/initramfs.cpio
//
// -modules may be repeated (one directory per kernel release) or omitted.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/rscvm/rscvm/guestimages/initramfs"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	agent := flag.String("agent", "", "static agent executable to install as /init (required)")
	out := flag.String("o", "", "output cpio file (required)")
	var mods multiFlag
	flag.Var(&mods, "modules", "module directory with load.order and kver (repeatable)")
	flag.Parse()
	if *agent == "" || *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*agent, *out, mods); err != nil {
		slog.Error("mkinitramfs", "err", err)
		os.Exit(1)
	}
}

func run(agent, out string, mods []string) error {
	init, err := os.ReadFile(agent)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	spec := initramfs.Spec{Init: init}
	for _, d := range mods {
		m, err := initramfs.ReadModulesDir(d)
		if err != nil {
			return err
		}
		spec.Modules = append(spec.Modules, m)
	}
	if err := initramfs.WriteFile(out, spec); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "mkinitramfs: wrote %s\n", out)
	return nil
}
