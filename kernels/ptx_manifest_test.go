package kernels

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The committed PTX is kept current by content (scripts/ptx.sh, `make ptx`): kernels/ptx/SOURCES.sha256 records for
// each module the sha256 of every input file and of the PTX. These tests check that record without nvcc, so that a
// .cu edited without `make ptx` fails `go test ./...` on any machine, and they check the script's answer on a
// machine without nvcc.

const manifestPath = "kernels/ptx/SOURCES.sha256"

// manifestProblems compares the manifest under root (a folder holding kernels/) with the files there, one line per
// problem: a module whose inputs or PTX no longer hash as recorded, a .cu without a module, a PTX file without an
// entry, a module whose recorded -arch does not match its PTX's .target.
func manifestProblems(root string) ([]string, error) {
	text, err := os.ReadFile(filepath.Join(root, manifestPath))
	if err != nil {
		return nil, err
	}
	type module struct {
		flags  string
		inputs [][2]string // sha256, path
		out    string
	}
	mods := map[string]*module{}
	var order []string
	for n, line := range strings.Split(string(text), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 3 {
			return nil, fmt.Errorf("%s:%d: too few fields: %q", manifestPath, n+1, line)
		}
		m := mods[f[0]]
		if m == nil {
			m = &module{}
			mods[f[0]] = m
			order = append(order, f[0])
		}
		switch {
		case f[1] == "flags":
			m.flags = strings.Join(f[2:], " ")
		case f[1] == "in" && len(f) == 4:
			m.inputs = append(m.inputs, [2]string{f[2], f[3]})
		case f[1] == "out" && len(f) == 3:
			m.out = f[2]
		default:
			return nil, fmt.Errorf("%s:%d: cannot parse %q", manifestPath, n+1, line)
		}
	}

	var problems []string
	hash := func(path string) (string, error) {
		b, err := os.ReadFile(filepath.Join(root, path))
		if err != nil {
			return "", err
		}
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:]), nil
	}
	target := regexp.MustCompile(`(?m)^\.target\s+sm_(\d+)`)
	for _, name := range order {
		m := mods[name]
		if m.flags == "" || len(m.inputs) == 0 || m.out == "" {
			problems = append(problems, fmt.Sprintf("%s: entry lacks its flags, inputs or out line", name))
			continue
		}
		var changed []string
		for _, in := range m.inputs {
			if h, err := hash(in[1]); err != nil || h != in[0] {
				changed = append(changed, in[1])
			}
		}
		if len(changed) > 0 {
			problems = append(problems, fmt.Sprintf("%s is stale: %s changed", name, strings.Join(changed, ", ")))
			continue
		}
		ptx, err := os.ReadFile(filepath.Join(root, name))
		h := sha256.Sum256(ptx)
		if err != nil || hex.EncodeToString(h[:]) != m.out {
			problems = append(problems, fmt.Sprintf("%s differs from its recorded hash (or is missing)", name))
			continue
		}
		t := target.FindSubmatch(ptx)
		if t == nil || !strings.Contains(" "+m.flags+" ", " -arch=compute_"+string(t[1])+" ") {
			problems = append(problems, fmt.Sprintf("%s: its .target does not match the recorded flags %q", name, m.flags))
		}
	}
	// Every .cu has its compute_70 module, and that module was made from it.
	cus, _ := filepath.Glob(filepath.Join(root, "kernels", "*.cu"))
	for _, cu := range cus {
		src := "kernels/" + filepath.Base(cu)
		mod := "kernels/ptx/" + strings.TrimSuffix(filepath.Base(cu), ".cu") + ".ptx"
		m := mods[mod]
		if m == nil || !slices.ContainsFunc(m.inputs, func(in [2]string) bool { return in[1] == src }) {
			problems = append(problems, fmt.Sprintf("%s has no module %s in %s", src, mod, manifestPath))
		}
	}
	// Every PTX file is a module of the manifest (no leftover of a removed .cu).
	err = filepath.WalkDir(filepath.Join(root, "kernels", "ptx"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".ptx") {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if mods[filepath.ToSlash(rel)] == nil {
			problems = append(problems, fmt.Sprintf("%s is not in %s", filepath.ToSlash(rel), manifestPath))
		}
		return nil
	})
	return problems, err
}

func TestPTXManifestCurrent(t *testing.T) {
	problems, err := manifestProblems("..")
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("the committed PTX is not current with kernels/*.cu; run make ptx (nvcc: scripts/setup.sh --cuda):\n%s",
			strings.Join(problems, "\n"))
	}
}

// copyRepo copies what scripts/ptx.sh and `make ptx` read (kernels/, the script, the make files) to a new folder.
func copyRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "kernels"), os.DirFS(".")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"scripts/ptx.sh", "Makefile"} {
		src := filepath.Join("..", f)
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// appendTo adds a comment line to a file of the copy: a change of content, not of meaning.
func appendTo(t *testing.T, dir, file string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("// edited\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPTXManifestProblems shows that manifestProblems (and so TestPTXManifestCurrent) fails on each kind of change.
func TestPTXManifestProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, dir string)
		want []string // the modules or files named, one problem each
	}{
		{"unchanged", func(*testing.T, string) {}, nil},
		{"cu", func(t *testing.T, dir string) { appendTo(t, dir, "kernels/embed.cu") }, []string{"kernels/ptx/embed.ptx is stale: kernels/embed.cu changed"}},
		{"header", func(t *testing.T, dir string) { appendTo(t, dir, "kernels/mma.cuh") },
			[]string{"kernels/ptx/conv2d.ptx is stale", "kernels/ptx/conv2d_bf16.ptx is stale",
				"kernels/ptx/conv2d_wgrad_tf32.ptx is stale", "kernels/ptx/linear_bf16.ptx is stale",
				"kernels/ptx/tc_probe.ptx is stale", "kernels/ptx/sm80/conv2d.ptx is stale",
				"kernels/ptx/sm80/conv2d_bf16.ptx is stale", "kernels/ptx/sm80/conv2d_wgrad_tf32.ptx is stale",
				"kernels/ptx/sm80/linear_bf16.ptx is stale", "kernels/ptx/sm80/tc_probe.ptx is stale"}},
		{"ptx", func(t *testing.T, dir string) { appendTo(t, dir, "kernels/ptx/embed.ptx") }, []string{"kernels/ptx/embed.ptx differs"}},
		{"new cu", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "kernels/extra.cu"), []byte("// new\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"kernels/extra.cu has no module"}},
		{"orphan ptx", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "kernels/ptx/gone.ptx"), []byte("// old\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, []string{"kernels/ptx/gone.ptx is not in"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyRepo(t)
			tc.edit(t, dir)
			got, err := manifestProblems(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d naming %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d: %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

// pathWithoutNVCC returns a PATH of one folder with links to every program on $PATH except nvcc: a machine
// without the CUDA toolkit, even where nvcc lives in /usr/bin.
func pathWithoutNVCC(t *testing.T) string {
	t.Helper()
	bin := t.TempDir()
	seen := map[string]bool{"nvcc": true}
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		if !filepath.IsAbs(d) {
			continue
		}
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if seen[e.Name()] || e.IsDir() {
				continue
			}
			seen[e.Name()] = true
			if err := os.Symlink(filepath.Join(d, e.Name()), filepath.Join(bin, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	return bin
}

// run runs a command in dir with PATH replaced (and NVCC set when nvcc is not empty); it returns the output lines
// (stdout and stderr) and the exit status.
func run(t *testing.T, dir, path, nvcc string, name string, args ...string) ([]string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "NVCC=") && !strings.HasPrefix(kv, "MAKEFLAGS=") &&
			!strings.HasPrefix(kv, "MFLAGS=") && !strings.HasPrefix(kv, "MAKELEVEL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "PATH="+path)
	if nvcc != "" {
		cmd.Env = append(cmd.Env, "NVCC="+nvcc)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if out.Len() == 0 {
		lines = nil
	}
	return lines, code
}

// TestPTXScriptWithoutNVCC runs `scripts/ptx.sh build` (what `make ptx` runs) on copies of kernels/ on a PATH
// without nvcc: one line and success when nothing changed, failure naming each stale module after an edit.
func TestPTXScriptWithoutNVCC(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash:", err)
	}
	path := pathWithoutNVCC(t)
	const hint = "; install nvcc with scripts/setup.sh --cuda and run make ptx"
	current := func(t *testing.T, lines []string, code int) {
		t.Helper()
		if code != 0 || len(lines) != 1 || !strings.Contains(lines[0], "is current") ||
			!strings.Contains(lines[0], "scripts/setup.sh --cuda") || !strings.Contains(lines[0], "make ptx") {
			t.Fatalf("exit status %d, output %q; want 0 and one line saying the PTX is current and how to rebuild it",
				code, lines)
		}
	}
	stale := func(t *testing.T, lines []string, code int, want ...string) {
		t.Helper()
		if code == 0 || !slices.Equal(lines, want) {
			t.Fatalf("exit status %d, output\n%s\nwant non-zero and\n%s", code, strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
	}

	t.Run("unchanged", func(t *testing.T) {
		lines, code := run(t, copyRepo(t), path, "", bash, "scripts/ptx.sh", "build")
		current(t, lines, code)
	})
	t.Run("unchanged/NVCC=missing", func(t *testing.T) { // the override, with the normal PATH
		lines, code := run(t, copyRepo(t), os.Getenv("PATH"), "/nonexistent/nvcc", bash, "scripts/ptx.sh", "build")
		current(t, lines, code)
	})
	t.Run("cu", func(t *testing.T) {
		dir := copyRepo(t)
		appendTo(t, dir, "kernels/embed.cu")
		lines, code := run(t, dir, path, "", bash, "scripts/ptx.sh", "build")
		stale(t, lines, code, "kernels/ptx/embed.ptx is stale: kernels/embed.cu changed"+hint)
	})
	t.Run("header", func(t *testing.T) {
		dir := copyRepo(t)
		appendTo(t, dir, "kernels/mma.cuh")
		lines, code := run(t, dir, path, "", bash, "scripts/ptx.sh", "build")
		stale(t, lines, code, "kernels/ptx/conv2d.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/conv2d_bf16.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/conv2d_wgrad_tf32.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/linear_bf16.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/tc_probe.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/sm80/conv2d.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/sm80/conv2d_bf16.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/sm80/conv2d_wgrad_tf32.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/sm80/linear_bf16.ptx is stale: kernels/mma.cuh changed"+hint,
			"kernels/ptx/sm80/tc_probe.ptx is stale: kernels/mma.cuh changed"+hint)
	})
	t.Run("make", func(t *testing.T) { // the Makefile's wiring: make ptx is the script
		mk, err := exec.LookPath("make")
		if err != nil {
			t.Skip("no make:", err)
		}
		dir := copyRepo(t)
		lines, code := run(t, dir, path, "", mk, "ptx")
		current(t, lines, code)
		appendTo(t, dir, "kernels/noise.cu")
		lines, code = run(t, dir, path, "", mk, "ptx")
		if code == 0 || len(lines) == 0 || lines[0] != "kernels/ptx/noise.ptx is stale: kernels/noise.cu changed"+hint {
			t.Fatalf("after an edit of kernels/noise.cu: exit status %d, output %q", code, lines)
		}
	})
}
