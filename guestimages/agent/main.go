// Command agent is rscvm's guest agent: the /init of the test initramfs. It
// mounts /proc, /sys and /dev, loads the virtio/net modules listed in
// /lib/modules/<release>/load.order, runs the actions named on the kernel
// command line (see package protocol), prints one result line per step on
// the console and powers the machine off.
//
// Build it static: CGO_ENABLED=0 GOAMD64=v1 go build ./guestimages/agent
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rscvm/rscvm/guestimages/agent/protocol"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "rscvm agent: must run as init (PID 1) in a guest; it powers the machine off when done")
		os.Exit(2)
	}
	out := &console{w: openConsole()}
	errs := 0
	if err := mountAll(); err != nil {
		out.line(protocol.FormatError("mount", err))
		errs++
	}
	if out.w == os.Stdout {
		// the kernel may have started init without a console; /dev is
		// mounted now
		out.w = openConsole()
	}
	errs += loadModules(out)

	a := &agent{out: out, sysRoot: "/sys"}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		out.line(protocol.FormatError("cmdline", err))
		errs++
	} else {
		cfg, err := protocol.ParseCommandLine(string(cmdline))
		switch {
		case errors.Is(err, protocol.ErrNoAgent):
			cfg.Actions = []protocol.Action{{Kind: protocol.KindReady}}
			errs += a.run(cfg)
		case err != nil:
			out.line(protocol.FormatError("cmdline", err))
			errs++
		default:
			errs += a.run(cfg)
		}
	}
	out.line(protocol.Format(protocol.LineDone, "errors="+strconv.Itoa(errs)))
	powerOff(out)
}

// console writes whole lines with one write each, so that concurrent kernel
// messages cannot split them.
type console struct {
	mu sync.Mutex
	w  io.Writer
}

func (c *console) line(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, _ = io.WriteString(c.w, s+"\n")
}

// loadModules loads /lib/modules/<release>/load.order and reports it.
func loadModules(out *console) int {
	rel, err := kernelRelease()
	if err != nil {
		out.line(protocol.FormatError("uname", err))
		return 1
	}
	dir := filepath.Join("/lib/modules", rel)
	names, err := readLoadOrder(dir)
	if err != nil {
		out.line(protocol.FormatError("modules", err))
		return 1
	}
	errs, loaded := 0, 0
	for _, n := range names {
		if err := loadModule(filepath.Join(dir, n)); err != nil {
			out.line(protocol.FormatError("module "+n, err))
			errs++
			continue
		}
		loaded++
	}
	out.line(protocol.Format(protocol.LineModules, "kver="+rel, "loaded="+strconv.Itoa(loaded)))
	return errs
}

// agent runs the actions of one configuration.
type agent struct {
	out     *console
	sysRoot string
	cfg     protocol.Config
	// linked is set once the interface is up and configured; linkTried
	// once link was attempted (it is not retried).
	linked, linkTried bool
}

// run executes cfg's actions in order and returns the number of errors.
func (a *agent) run(cfg protocol.Config) int {
	a.cfg = cfg
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	errs := 0
	if cfg.Addr.IsValid() && !a.linkTried {
		if err := a.link(ctx); err != nil {
			a.out.line(protocol.FormatError("link "+cfg.Iface, err))
			errs++
		}
	}
	for _, act := range cfg.Actions {
		if act.NeedsLink() && !a.linkTried {
			if err := a.link(ctx); err != nil {
				a.out.line(protocol.FormatError("link "+cfg.Iface, err))
				errs++
				if act.Kind == protocol.KindLink {
					continue
				}
			}
		}
		if err := a.do(ctx, act); err != nil {
			a.out.line(protocol.FormatError(act.String(), err))
			errs++
		}
	}
	return errs
}

// do runs one action and prints its result line.
func (a *agent) do(ctx context.Context, act protocol.Action) error {
	iface := a.cfg.Iface
	switch act.Kind {
	case protocol.KindReady:
		a.out.line(protocol.Format(protocol.LineReady))
	case protocol.KindLink:
		// done by run before the action
	case protocol.KindFeatures:
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := waitIface(wctx, a.sysRoot, iface); err != nil {
			return err
		}
		bits, err := readFeatureBits(a.sysRoot, iface)
		if err != nil {
			return err
		}
		hex, err := protocol.FeatureBitsToHex(bits)
		if err != nil {
			return err
		}
		a.out.line(protocol.Format(protocol.LineFeatures, iface, hex))
	case protocol.KindOffloads:
		fd, err := ethtoolSocket()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		states, err := offloads(fd, iface)
		if err != nil {
			return err
		}
		a.out.line(formatOffloads(iface, states))
	case protocol.KindSet:
		fd, err := ethtoolSocket()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := setFeature(fd, iface, act.Feature, act.On); err != nil {
			return err
		}
		a.out.line(protocol.Format(protocol.LineSet, act.Feature+"="+onOffWord(act.On), "ok"))
	case protocol.KindSink, protocol.KindDrain:
		ln, err := listenSink(ctx, act.Port)
		if err != nil {
			return err
		}
		hash := act.Kind == protocol.KindSink
		a.out.line(protocol.Format(string(act.Kind), "listening", "port="+strconv.Itoa(int(act.Port))))
		r, d, err := acceptSinkTimed(ctx, ln, hash)
		if err != nil {
			return err
		}
		if hash {
			a.out.line(protocol.FormatSink(r.Bytes, r.SHA256, d))
		} else {
			a.out.line(protocol.FormatDrain(r.Bytes, d))
		}
	case protocol.KindSource:
		r, err := source(ctx, act.Addr, act.Bytes)
		if err != nil {
			return err
		}
		a.out.line(protocol.Format(protocol.LineSource, "bytes="+strconv.FormatInt(r.Bytes, 10), "sha256="+r.SHA256))
	case protocol.KindRX, protocol.KindTX:
		dir := string(act.Kind)
		pk, err := readStat(a.sysRoot, iface, dir+"_packets")
		if err != nil {
			return err
		}
		by, err := readStat(a.sysRoot, iface, dir+"_bytes")
		if err != nil {
			return err
		}
		a.out.line(protocol.Format(dir, "packets="+strconv.FormatUint(pk, 10), "bytes="+strconv.FormatUint(by, 10)))
	case protocol.KindSleep:
		t := time.NewTimer(act.Duration)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	default:
		return fmt.Errorf("unknown action")
	}
	return nil
}

// link brings the interface up, configures the address and gateway and
// prints the link line.
func (a *agent) link(ctx context.Context) error {
	a.linkTried = true
	iface := a.cfg.Iface
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := waitIface(wctx, a.sysRoot, iface); err != nil {
		return err
	}
	fd, err := ethtoolSocket()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := linkUp(fd, iface); err != nil {
		return err
	}
	args := []string{iface, "up"}
	mac, err := readMAC(a.sysRoot, iface)
	if err != nil {
		return err
	}
	args = append(args, "mac="+mac)
	if p := a.cfg.Addr; p.IsValid() {
		if p.Addr().Is4() {
			err = setIPv4(fd, iface, p)
		} else {
			err = setIPv6(iface, p)
		}
		if err != nil {
			return fmt.Errorf("address %s: %w", p, err)
		}
		args = append(args, "addr="+p.String())
	}
	if g := a.cfg.Gateway; g.IsValid() {
		if err := addDefaultRoute(fd, iface, g); err != nil {
			return fmt.Errorf("gateway %s: %w", g, err)
		}
		args = append(args, "gw="+g.String())
	}
	if err := waitCarrier(wctx, a.sysRoot, iface); err != nil {
		return err
	}
	a.linked = true
	a.out.line(protocol.Format(protocol.LineLink, args...))
	return nil
}

// formatOffloads builds the offloads line.
func formatOffloads(iface string, states []featureState) string {
	args := make([]string, 0, len(states)+1)
	args = append(args, iface)
	for _, s := range states {
		if s.Name == "" || strings.ContainsAny(s.Name, " =") {
			continue
		}
		args = append(args, s.Name+"="+onOffWord(s.On))
	}
	return protocol.Format(protocol.LineOffloads, args...)
}
