package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOutDir(t *testing.T) {
	t.Setenv("RSCVM_OUT", "/some/where")
	d, err := OutDir()
	if err != nil || d != "/some/where" {
		t.Fatalf("OutDir with RSCVM_OUT = %q, %v", d, err)
	}
	t.Setenv("RSCVM_OUT", "")
	d, err = OutDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(d), "go.mod")); err != nil {
		t.Fatalf("OutDir %q is not next to go.mod: %v", d, err)
	}
}

// fakeTB records what SkipOrFail does without ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Skip(args ...any)                  { f.skipped = args[0].(string) }
func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = format }

func TestSkipOrFailPolicy(t *testing.T) {
	t.Setenv(RequireEnv, "")
	f := &fakeTB{}
	SkipOrFail(f, "needs %s", "x")
	if f.skipped != "needs x" || f.failed != "" {
		t.Fatalf("without %s: skipped %q failed %q", RequireEnv, f.skipped, f.failed)
	}
	t.Setenv(RequireEnv, "1")
	f = &fakeTB{}
	SkipOrFail(f, "needs %s", "x")
	if f.failed == "" || f.skipped != "" {
		t.Fatalf("with %s=1: skipped %q failed %q", RequireEnv, f.skipped, f.failed)
	}
}

func TestImageMissing(t *testing.T) {
	t.Setenv(RequireEnv, "")
	t.Setenv("RSCVM_OUT", t.TempDir())
	f := &fakeTB{}
	Image(f, "nope/vmlinuz")
	if f.skipped == "" {
		t.Fatal("a missing image did not skip")
	}
}
