package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func fillWith(files map[string]string) func(string) error {
	return func(dir string) error {
		for name, body := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := WriteBytes(p, []byte(body)); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestWriteDir: a new folder appears whole; writing it again replaces every file (a file only the old one had is
// gone); a failing fill leaves the old folder as it was; no temporary is left behind in any case.
func TestWriteDir(t *testing.T) {
	parent := t.TempDir()
	path := filepath.Join(parent, "pipeline")
	if err := WriteDir(path, fillWith(map[string]string{"a.json": "1", "sub/b.bin": "2", "old.png": "x"})); err != nil {
		t.Fatal(err)
	}
	if got := names(t, parent); !slices.Equal(got, []string{"pipeline"}) {
		t.Fatalf("parent holds %v, want [pipeline]", got)
	}
	if err := WriteDir(path, fillWith(map[string]string{"a.json": "3", "sub/b.bin": "4"})); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a.json": "3", "sub/b.bin": "4"} {
		b, err := os.ReadFile(filepath.Join(path, name))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q (%v), want %q", name, b, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(path, "old.png")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old.png of the previous folder survived the replacement (%v)", err)
	}
	boom := errors.New("disk full")
	err := WriteDir(path, func(dir string) error {
		if err := fillWith(map[string]string{"a.json": "5"})(dir); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("WriteDir with a failing fill: %v, want %v", err, boom)
	}
	if b, _ := os.ReadFile(filepath.Join(path, "a.json")); string(b) != "3" {
		t.Errorf("after a failed write a.json = %q, want the old %q", b, "3")
	}
	if got := names(t, parent); !slices.Equal(got, []string{"pipeline"}) {
		t.Fatalf("parent holds %v after a failed write, want [pipeline] (temporary left)", got)
	}
}

// TestExchange: on Linux the two names swap in one step (WriteDir's replacement without a moment of absence).
func TestExchange(t *testing.T) {
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skip("renameat2 is used on linux/amd64 and linux/arm64 only")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "name"), []byte(filepath.Base(p)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := exchange(a, b); err != nil {
		t.Skipf("renameat2(RENAME_EXCHANGE) not supported here: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(a, "name")); string(got) != "b" {
		t.Errorf("after the exchange a holds %q, want b's contents", got)
	}
	if got, _ := os.ReadFile(filepath.Join(b, "name")); string(got) != "a" {
		t.Errorf("after the exchange b holds %q, want a's contents", got)
	}
}

// TestRemoveStaleFolders: a temporary folder left by a crash inside WriteDir is deleted, ordinary folders are not.
func TestRemoveStaleFolders(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, ".pipeline"+TmpMarker+"123")
	keep := filepath.Join(dir, "pipeline")
	for _, p := range []string{filepath.Join(stale, "unet"), keep} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	removed, errs := RemoveStale(dir)
	if len(errs) != 0 || len(removed) != 1 || !strings.HasSuffix(removed[0], filepath.Base(stale)) {
		t.Fatalf("RemoveStale removed %v (errors %v), want the stale folder only", removed, errs)
	}
	if got := names(t, dir); !slices.Equal(got, []string{"pipeline"}) {
		t.Fatalf("dir holds %v, want [pipeline]", got)
	}
}
