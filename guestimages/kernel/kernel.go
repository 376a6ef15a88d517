// Package kernel holds what Go code needs to know about rscvm's guest
// kernels: the command line that lets the linux-source kernel run under the
// emulated KVM of the project's machines, and the X86_FEATURE numbers behind
// its clearcpuid= list (see build-linux.sh, rscvm.config and rscvm.patch in
// this directory).
package kernel

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

//go:embed cmdline.txt
var cmdlineTxt string

//go:embed clearcpuid.features
var clearcpuidFeatures string

// EmulatedKVMCmdline is the kernel command line (without rscvm.agent= and
// the like) that boots the linux-source kernel under the emulated KVM:
// serial console, early printk, no XSAVE, the features the emulator cannot
// execute masked by number, mitigations off and rscvm.noint3 (skip the int3
// self-test and the fwait in fpu__drop(), see rscvm.patch).
func EmulatedKVMCmdline() string {
	return strings.TrimSpace(cmdlineTxt)
}

// MaskedFeatures returns the X86_FEATURE_ names (without the prefix) whose
// numbers form the clearcpuid= argument, in order.
func MaskedFeatures() []string {
	var names []string
	for _, l := range strings.Split(clearcpuidFeatures, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		names = append(names, l)
	}
	return names
}

// maxClearCPUID is the longest clearcpuid= argument Linux 6.1 accepts.
const maxClearCPUID = 128

var featureDefine = regexp.MustCompile(`^#define\s+X86_FEATURE_([A-Z0-9_]+)\s+\(\s*(\d+)\s*\*\s*32\s*\+\s*(\d+)\s*\)`)

// ParseCPUFeatures reads arch/x86/include/asm/cpufeatures.h and returns the
// number (word*32+bit) of every X86_FEATURE_ name, without the prefix.
func ParseCPUFeatures(r io.Reader) (map[string]int, error) {
	m := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	for sc.Scan() {
		g := featureDefine.FindStringSubmatch(sc.Text())
		if g == nil {
			continue
		}
		word, err1 := strconv.Atoi(g[2])
		bit, err2 := strconv.Atoi(g[3])
		if err1 != nil || err2 != nil || word > 1<<16 || bit > 31 {
			return nil, fmt.Errorf("cpufeatures.h: bad definition %q", sc.Text())
		}
		m[g[1]] = word*32 + bit
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cpufeatures.h: %w", err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("cpufeatures.h: no X86_FEATURE_ definitions")
	}
	return m, nil
}

// ClearCPUIDArg returns the clearcpuid= argument (comma-separated numbers)
// for names, checking the 6.1 length limit.
func ClearCPUIDArg(features map[string]int, names []string) (string, error) {
	nums := make([]string, len(names))
	for i, n := range names {
		v, ok := features[n]
		if !ok {
			return "", fmt.Errorf("no X86_FEATURE_%s", n)
		}
		nums[i] = strconv.Itoa(v)
	}
	arg := strings.Join(nums, ",")
	if len(arg) > maxClearCPUID {
		return "", fmt.Errorf("clearcpuid argument of %d characters; Linux 6.1 takes %d", len(arg), maxClearCPUID)
	}
	return arg, nil
}

// CmdlineClearCPUID returns the clearcpuid= argument of a command line.
func CmdlineClearCPUID(cmdline string) (string, bool) {
	for _, w := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(w, "clearcpuid="); ok {
			return v, true
		}
	}
	return "", false
}
