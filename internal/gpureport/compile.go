package gpureport

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Tools name the CUDA binaries the report runs (Debian's nvidia-cuda-toolkit has all three). nvdisasm prints the
// same SASS as `cuobjdump -sass` in a third of the time; cuobjdump is the fallback for a module whose nvdisasm
// listing branches to a label it never prints (CUDA 11.8's nvdisasm does that now and then, e.g. in
// conv2d_pack_act_f32 on sm_90), since it prints branch targets as addresses.
type Tools struct {
	Ptxas, Nvdisasm, Cuobjdump string
}

// Kernel is one entry function of one PTX module compiled for one SM.
type Kernel struct {
	Module  string // "kernels/ptx/conv2d.ptx"
	Target  int    // the module's .target (70, 80)
	Name    string
	SM      int
	MaxNTID int // threads of __launch_bounds__, 0 when not given
	Res     Resources
	Loop    Loop
	InLoop  bool // false: no loop, the whole function was counted
	Mix     Mix
}

// Module is one PTX file.
type Module struct {
	Path string // relative to the repository root, slash-separated
	Info PTXInfo
}

// FindModules lists kernels/ptx/*.ptx and kernels/ptx/sm*/*.ptx under root, in path order.
func FindModules(root string) ([]Module, error) {
	var paths []string
	for _, g := range []string{"kernels/ptx/*.ptx", "kernels/ptx/sm*/*.ptx"} {
		m, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(g)))
		if err != nil {
			return nil, err
		}
		paths = append(paths, m...)
	}
	sort.Strings(paths)
	var mods []Module
	for _, p := range paths {
		src, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return nil, err
		}
		info, err := ParsePTX(string(src))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		mods = append(mods, Module{Path: filepath.ToSlash(rel), Info: info})
	}
	if len(mods) == 0 {
		return nil, fmt.Errorf("no PTX under %s/kernels/ptx", root)
	}
	return mods, nil
}

// Compile runs ptxas -v and nvdisasm -c on every module for every arch at or above the module's target, and
// returns the kernels sorted by module, name and SM.
func Compile(root string, mods []Module, archs []Arch, t Tools) ([]Kernel, error) {
	tmp, err := os.MkdirTemp("", "gpureport-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	type job struct {
		mod  Module
		arch Arch
		out  []Kernel
		err  error
	}
	var jobs []*job
	for _, m := range mods {
		for _, a := range archs {
			if a.SM >= m.Info.Target {
				jobs = append(jobs, &job{mod: m, arch: a})
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, runtime.NumCPU()))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			j.out, j.err = compileOne(root, filepath.Join(tmp, fmt.Sprintf("%d.cubin", i)), j.mod, j.arch, t)
		}()
	}
	wg.Wait()
	var ks []Kernel
	for _, j := range jobs {
		if j.err != nil {
			return nil, fmt.Errorf("%s for sm_%d: %w", j.mod.Path, j.arch.SM, j.err)
		}
		ks = append(ks, j.out...)
	}
	sort.Slice(ks, func(a, b int) bool {
		x, y := ks[a], ks[b]
		if x.Module != y.Module {
			return x.Module < y.Module
		}
		if x.Name != y.Name {
			return x.Name < y.Name
		}
		return x.SM < y.SM
	})
	return ks, nil
}

func compileOne(root, cubin string, m Module, a Arch, t Tools) ([]Kernel, error) {
	arch := fmt.Sprintf("-arch=sm_%d", a.SM)
	_, verbose, err := run(t.Ptxas, arch, "-v", filepath.Join(root, filepath.FromSlash(m.Path)), "-o", cubin)
	if err != nil {
		return nil, err
	}
	res, err := ParsePtxasV(verbose)
	if err != nil {
		return nil, err
	}
	sass, _, err := run(t.Nvdisasm, "-c", cubin)
	if err != nil {
		return nil, err
	}
	fns, err := ParseSASS(sass)
	if err != nil && t.Cuobjdump != "" {
		sass, _, errC := run(t.Cuobjdump, "-sass", cubin)
		if errC != nil {
			return nil, fmt.Errorf("%v; %v", err, errC)
		}
		fns, err = ParseSASS(sass)
	}
	if err != nil {
		return nil, err
	}
	byName := map[string]Function{}
	for _, f := range fns {
		byName[f.Name] = f
	}
	var ks []Kernel
	for _, e := range m.Info.Entries {
		f, ok := byName[e]
		if !ok {
			return nil, fmt.Errorf("nvdisasm printed no SASS for %s", e)
		}
		r, ok := res[e]
		if !ok {
			return nil, fmt.Errorf("ptxas -v reported nothing for %s", e)
		}
		l, body, in := f.MainLoop()
		ks = append(ks, Kernel{Module: m.Path, Target: m.Info.Target, Name: e, SM: a.SM, MaxNTID: m.Info.MaxNTID[e],
			Res: r, Loop: l, InLoop: in, Mix: Classify(body)})
	}
	return ks, nil
}

func run(name string, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, e.String())
	}
	return o.String(), e.String(), nil
}

var reRelease = regexp.MustCompile(`release [0-9.]+, V[0-9.]+`)

// Version is the toolkit release ptxas reports ("release 11.8, V11.8.89").
func (t Tools) Version() (string, error) {
	out, _, err := run(t.Ptxas, "--version")
	if err != nil {
		return "", err
	}
	if m := reRelease.FindString(out); m != "" {
		return m, nil
	}
	return "", fmt.Errorf("%s --version: no release in %q", t.Ptxas, out)
}

// Resolve returns, for each kernel name, the version a device of compute capability sm loads: the one from the
// module with the highest target ≤ sm that has it (the cuda driver loads kernels/ptx/sm80/*.ptx over kernels/ptx/*.ptx
// on compute capability ≥ 8.0), compiled for sm.
func Resolve(ks []Kernel, sm int) map[string]Kernel {
	out := map[string]Kernel{}
	for _, k := range ks {
		if k.SM != sm || k.Target > sm {
			continue
		}
		if o, ok := out[k.Name]; !ok || k.Target > o.Target {
			out[k.Name] = k
		}
	}
	return out
}
