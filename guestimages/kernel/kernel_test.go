package kernel

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/rscvm/rscvm/internal/testenv"
)

func TestEmulatedKVMCmdline(t *testing.T) {
	c := EmulatedKVMCmdline()
	require.NotContains(t, c, "\n")
	for _, w := range []string{"console=ttyS0", "earlyprintk=serial,ttyS0", "noxsave", "mitigations=off", "rscvm.noint3"} {
		require.Contains(t, strings.Fields(c), w)
	}
	arg, ok := CmdlineClearCPUID(c)
	require.True(t, ok)
	require.LessOrEqual(t, len(arg), maxClearCPUID)
	require.Len(t, strings.Split(arg, ","), len(MaskedFeatures()))
	require.Equal(t, []string{"RDTSCP", "CX16", "PCID", "POPCNT", "RDRAND", "FSGSBASE", "SMEP", "INVPCID",
		"RDSEED", "SMAP", "CLFLUSHOPT", "CLWB", "PKU", "OSPKE", "RDPID", "MD_CLEAR"}, MaskedFeatures())
}

const sampleHeader = `
#define X86_FEATURE_RDTSCP		( 1*32+27) /* RDTSCP */
#define X86_FEATURE_CX16		( 4*32+13) /* CMPXCHG16B instruction */
#define X86_FEATURE_FSGSBASE		( 9*32+ 0) /* RDFSBASE */
#define X86_BUG_F00F			X86_BUG(0) /* not a feature */
`

func TestParseCPUFeatures(t *testing.T) {
	m, err := ParseCPUFeatures(strings.NewReader(sampleHeader))
	require.NoError(t, err)
	require.Equal(t, map[string]int{"RDTSCP": 59, "CX16": 141, "FSGSBASE": 288}, m)
	arg, err := ClearCPUIDArg(m, []string{"RDTSCP", "CX16", "FSGSBASE"})
	require.NoError(t, err)
	require.Equal(t, "59,141,288", arg)
	_, err = ClearCPUIDArg(m, []string{"NOPE"})
	require.Error(t, err)
	long := make([]string, 40)
	for i := range long {
		long[i] = "FSGSBASE"
	}
	_, err = ClearCPUIDArg(m, long)
	require.Error(t, err, "longer than 128 characters")
	_, err = ParseCPUFeatures(strings.NewReader("nothing here"))
	require.Error(t, err)
}

// TestCmdlineMatchesSource re-derives the clearcpuid= numbers from the
// cpufeatures.h of the linux-source package and compares with cmdline.txt.
func TestCmdlineMatchesSource(t *testing.T) {
	h := cpufeaturesH(t)
	m, err := ParseCPUFeatures(bytes.NewReader(h))
	require.NoError(t, err)
	want, err := ClearCPUIDArg(m, MaskedFeatures())
	require.NoError(t, err)
	got, _ := CmdlineClearCPUID(EmulatedKVMCmdline())
	require.Equal(t, want, got, "cmdline.txt is stale for this linux-source")
}

// cpufeaturesH finds cpufeatures.h: $RSCVM_OUT/linux/cpufeatures.h (written
// by build-linux.sh), else extracted from /usr/src/linux-source-6.1.tar.xz.
func cpufeaturesH(t *testing.T) []byte {
	p := filepath.Join(outDir(t), "linux", "cpufeatures.h")
	if b, err := os.ReadFile(p); err == nil {
		return b
	}
	const tarball = "/usr/src/linux-source-6.1.tar.xz"
	if _, err := os.Stat(tarball); err != nil {
		t.Skipf("neither %s nor %s (apt-get install linux-source-6.1)", p, tarball)
	}
	cmd := exec.Command("tar", "-xJOf", tarball, "--wildcards", "*/arch/x86/include/asm/cpufeatures.h")
	out, err := cmd.Output()
	require.NoError(t, err)
	return out
}

// outDir is $RSCVM_OUT or the out/ directory of the repository.
func outDir(t *testing.T) string {
	d, err := testenv.OutDir()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestFragmentHonoured checks the built .config against rscvm.config when
// the kernel has been built.
func TestFragmentHonoured(t *testing.T) {
	cfg, err := os.ReadFile(filepath.Join(outDir(t), "linux", "config"))
	if err != nil {
		t.Skipf("no built kernel config (run guestimages/build.sh): %v", err)
	}
	frag, err := os.Open("rscvm.config")
	require.NoError(t, err)
	defer frag.Close()
	have := map[string]bool{}
	for _, l := range strings.Split(string(cfg), "\n") {
		have[l] = true
	}
	sc := bufio.NewScanner(frag)
	n := 0
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "CONFIG_"):
			require.True(t, have[l], "%s not in the built .config", l)
			n++
		case strings.HasSuffix(l, " is not set") && strings.HasPrefix(l, "# CONFIG_"):
			sym := strings.Fields(l)[1]
			require.NotContains(t, string(cfg), "\n"+sym+"=", l)
			n++
		}
	}
	require.NoError(t, sc.Err())
	require.Greater(t, n, 40)
}

func FuzzParseCPUFeatures(f *testing.F) {
	f.Add(sampleHeader)
	f.Add("#define X86_FEATURE_X (99999999999999999999*32+1)")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseCPUFeatures(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, v := range m {
			if v < 0 {
				t.Fatal("negative feature number")
			}
		}
	})
}
