package drivertest

// Tests of the emulated CUDA driver (bin/emudriver/libcuda.so.1, `make emu-driver`):
//   - TestExports: it exports every driver symbol the cuda-tagged build of package cuda imports, and nothing else;
//   - TestChecks: check.c calls the driver API directly, one process per case, and the driver's answers and stderr
//     lines are checked;
//   - TestCUDATaggedSuite: the cuda-tagged tests of ./cuda (gorgonia.org/cu, cuda/cu.go, the conformance suite on the
//     device path) run on it at compute capability 7.0 (FP32 convolutions) and 9.0 (the sm80 PTX, TF32).
// They need g++, cuda.h and the driver stub (scripts/setup.sh --cuda); without them they skip, except under CI.

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/kernels"
)

// The kernels the driver compiles are embedded by package kernels; importing it ties this test's cache entry to them.
// prepare reads the driver's own sources (in the parent folder, which embed cannot reach) for the same reason.
var _ = kernels.Sources

const stubs = "/usr/lib/x86_64-linux-gnu/stubs"

var (
	root    string // the repository
	libDir  string // bin/emudriver
	tmp     string
	setup   error // why the driver could not be built or tested here
	buildMu sync.Mutex
	cudaBin string // the cuda-tagged test binary of ./cuda, built once
	cudaErr error
)

func TestMain(m *testing.M) {
	var err error
	if root, err = filepath.Abs("../../../.."); err != nil {
		panic(err)
	}
	libDir = filepath.Join(root, "bin", "emudriver")
	if tmp, err = os.MkdirTemp("", "emudriver-test"); err != nil {
		panic(err)
	}
	setup = prepare()
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

// prepare checks the prerequisites and builds the library with make.
func prepare() error {
	for _, f := range []string{"/usr/include/cuda.h", filepath.Join(stubs, "libcuda.so")} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%s is missing (scripts/setup.sh --cuda installs it)", f)
		}
	}
	// Files the test depends on beyond its embedded sources: opening them puts them in go test's cache key.
	for _, pat := range []string{"../*.cpp", "../*.h", "../symbols.txt", "../exports.map", "testdata/check.c",
		"../../../ptx/*.ptx", "../../../ptx/sm80/*.ptx", "../../../../cuda/*.go", "../../../../Makefile"} {
		files, _ := filepath.Glob(pat)
		for _, f := range files {
			os.ReadFile(f)
		}
	}
	cmd := exec.Command("make", "-s", "emu-driver")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make emu-driver: %v\n%s", err, out)
	}
	return nil
}

func need(t *testing.T) {
	t.Helper()
	if setup == nil {
		return
	}
	if os.Getenv("CI") != "" || strings.Contains(setup.Error(), "make emu-driver") {
		t.Fatal(setup)
	}
	t.Skip(setup)
}

// cudaTest builds (once) the cuda-tagged test binary of package cuda against the driver stub.
func cudaTest(t *testing.T) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if cudaBin == "" && cudaErr == nil {
		bin := filepath.Join(tmp, "cuda.test")
		cmd := exec.Command("go", "test", "-c", "-tags", "cuda", "-o", bin, "./cuda/")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_LDFLAGS="+os.Getenv("CGO_LDFLAGS")+" -L"+stubs)
		if out, err := cmd.CombinedOutput(); err != nil {
			cudaErr = fmt.Errorf("go test -c -tags cuda ./cuda/: %v\n%s", err, out)
		} else {
			cudaBin = bin
		}
	}
	if cudaErr != nil {
		t.Fatal(cudaErr)
	}
	return cudaBin
}

func TestExports(t *testing.T) {
	need(t)
	lib, err := elf.Open(filepath.Join(libDir, "libcuda.so.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer lib.Close()
	syms, err := lib.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF {
			continue
		}
		if !strings.HasPrefix(s.Name, "cu") {
			t.Errorf("the library exports %s; only the driver API (cu*) should be visible", s.Name)
		}
		exported[s.Name] = true
	}
	bin, err := elf.Open(cudaTest(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	imported, err := bin.ImportedSymbols()
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	n := 0
	for _, s := range imported {
		if strings.HasPrefix(s.Name, "cu") {
			n++
			if !exported[s.Name] {
				missing = append(missing, s.Name)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the cuda build imports %d driver symbols the library does not export (make emu-driver-symbols, "+
			"then implement or stub them): %v", len(missing), missing)
	}
	if n < 100 {
		t.Errorf("the cuda build imports only %d cu* symbols; is it linked against libcuda?", n)
	}
	t.Logf("%d driver symbols imported by the cuda build, %d exported by the library", n, len(exported))
}

// checkBin compiles testdata/check.c against cuda.h and the driver stub, as gorgonia.org/cu is.
func checkBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(tmp, "check")
	buildMu.Lock()
	defer buildMu.Unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	out, err := exec.Command("gcc", "-O1", "-Wall", "-o", bin, "testdata/check.c", "-L"+stubs, "-lcuda").CombinedOutput()
	if err != nil {
		t.Fatalf("gcc check.c: %v\n%s", err, out)
	}
	return bin
}

func TestChecks(t *testing.T) {
	need(t)
	bin := checkBin(t)
	cases := []struct {
		name   string
		env    []string
		stderr []string // lines the driver must have written (substrings)
		once   string   // a substring that must appear exactly once
	}{
		{name: "noinit", stderr: []string{"cuDeviceGet: cuInit has not been called -> CUDA_ERROR_NOT_INITIALIZED (3)"}},
		{name: "device", env: []string{"DDPM_EMU_CC=7.0", "DDPM_EMU_MEM_MIB=3000"}, stderr: []string{"V100 sm_70", "3000 MiB"}},
		{name: "device", env: []string{"DDPM_EMU_CC=9.0"}, stderr: []string{"H100 sm_90", "16384 MiB",
			"cuMemAlloc_v2: no current context on this OS thread -> CUDA_ERROR_INVALID_CONTEXT (201)"}},
		{name: "context"},
		{name: "meminfo", stderr: []string{"CUDA_ERROR_OUT_OF_MEMORY (2)"}},
		{name: "launch"},
		{name: "params_exact"},
		{name: "param_count", stderr: []string{
			"a 12-byte parameter buffer, but its 2 parameter(s) take 16 bytes -> CUDA_ERROR_INVALID_VALUE (1)",
			"takes 2 parameter(s), but kernelParams is NULL",
			"kernelParams[1] is NULL",
			"entry emu_test_dynsmem_sum takes (.u64,.u64,.u32) in the PTX but (p64,p64) in the emulator's kernel",
		}},
		{name: "block_limits", stderr: []string{"has 128 threads, more than its .maxntid 64 -> CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (701)",
			"invalid configuration grid (1,1,1) block (1025,1,1)"}},
		{name: "shared_limits", stderr: []string{"40960 bytes of static + 8196 of dynamic shared memory exceed 49152",
			"uses 51200 bytes of static shared memory"}},
		{name: "shared_optin", env: []string{"DDPM_EMU_CC=7.0"}, stderr: []string{
			"MAX_DYNAMIC_SHARED_SIZE_BYTES 98305 is outside [0, 98304]", "cannot be set"}},
		{name: "shared_optin", stderr: []string{"MAX_DYNAMIC_SHARED_SIZE_BYTES 166913 is outside [0, 166912]",
			"0 bytes of static + 98308 of dynamic shared memory exceed 98304"}},
		{name: "shared_optin", env: []string{"DDPM_EMU_CC=8.6"}},
		{name: "shared_optin", env: []string{"DDPM_EMU_CC=9.0"}, stderr: []string{
			"MAX_DYNAMIC_SHARED_SIZE_BYTES 232449 is outside [0, 232448]"}},
		{name: "copy_bounds", stderr: []string{"runs 1 byte(s) past the end of the 1000-byte allocation",
			"which was freed", "is not 4-byte aligned", "is not in any allocation of this context"}},
		{name: "double_free", stderr: []string{"double free of", "is inside an allocation, not its start"}},
		{name: "leak", stderr: []string{"leak: 2 allocation(s), 300 bytes never freed"}},
		{name: "leak", env: []string{"DDPM_EMU_LEAKS=fail"}, stderr: []string{"leak: 2 allocation(s)",
			"2 allocation(s) leaked (DDPM_EMU_LEAKS=fail) -> CUDA_ERROR_INVALID_VALUE (1)"}},
		{name: "unknown_function", stderr: []string{"the module has no kernel named no_such_kernel -> CUDA_ERROR_NOT_FOUND (500)",
			"entry not_a_kernel_anywhere has no kernel of that name compiled into the emulator"}},
		{name: "target", env: []string{"DDPM_EMU_CC=7.0"}, stderr: []string{".target sm_80 is newer than the device (compute capability 7.0) -> CUDA_ERROR_INVALID_PTX (218)",
			"PTX ISA 9.0 is newer than this driver's 8.2", "loads PTX text only"}},
		{name: "target", env: []string{"DDPM_EMU_CC=8.0"}},
		{name: "target", env: []string{"DDPM_EMU_CC=9.0"}},
		{name: "kernel_faults", stderr: []string{"out-of-bounds write after the 40-byte allocation",
			"pointer argument 0:", "threads wait at different barriers"}},
		{name: "fault_injection", env: []string{"DDPM_EMU_FAIL=alloc:2,launch:emu_test_dynsmem_sum:2,sync:2"},
			stderr: []string{"DDPM_EMU_FAIL: failing alloc call 2", "DDPM_EMU_FAIL: failing launch call 2 of emu_test_dynsmem_sum",
				"DDPM_EMU_FAIL: failing sync call 2"}},
		{name: "stub", once: "emudriver: cuStreamCreateWithPriority is not emulated -> CUDA_ERROR_NOT_SUPPORTED (801)",
			stderr: []string{"cuCtxGetStreamPriorityRange is not emulated"}},
		{name: "streams", stderr: []string{"cuStreamCreate: flags 0x4", "cuStreamWaitEvent: flags 0x1, want 0",
			"cuEventElapsedTime: an event made with CU_EVENT_DISABLE_TIMING", "is not a live stream -> CUDA_ERROR_INVALID_HANDLE (400)",
			"the NULL stream cannot be destroyed", "is not a live event", "belongs to another context -> CUDA_ERROR_INVALID_CONTEXT (201)"}},
		{name: "streams", env: []string{"DDPM_EMU_STREAMS=sync"}},
		{name: "streams", env: []string{"DDPM_EMU_STREAMS=defer-streams"}},
		{name: "streams", env: []string{"DDPM_EMU_STREAMS=defer-null"}},
		{name: "order", env: []string{"DDPM_EMU_ORDER=forward"}},
		{name: "order", env: []string{"DDPM_EMU_ORDER=reverse"}},
		{name: "order", env: []string{"DDPM_EMU_ORDER=random:42"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(append([]string{c.name}, c.env...), ","), func(t *testing.T) {
			cmd := exec.Command(bin, c.name)
			cmd.Env = append(cleanEnv(), "LD_LIBRARY_PATH="+libDir, "DDPM_EMU_WORKERS=2")
			cmd.Env = append(cmd.Env, c.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("check %s: %v\n%s", c.name, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "emudriver: emulated CUDA driver") {
				t.Fatalf("check %s ran without the emulated driver's banner (wrong libcuda.so.1?):\n%s", c.name, stderr.String())
			}
			for _, want := range c.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			if c.once != "" {
				if n := strings.Count(stderr.String(), c.once); n != 1 {
					t.Errorf("stderr has %q %d times, want once:\n%s", c.once, n, stderr.String())
				}
			}
		})
	}
}

// TestStreamLog: DDPM_EMU_STREAM_LOG (%p: the process id) lists each stream operation as it is issued and, when
// DDPM_EMU_STREAMS held it back, as it runs: here the host function and record on s1 run at the NULL stream's wait.
func TestStreamLog(t *testing.T) {
	need(t)
	bin := checkBin(t)
	dir := t.TempDir()
	cmd := exec.Command(bin, "stream_log")
	cmd.Env = append(cleanEnv(), "LD_LIBRARY_PATH="+libDir, "DDPM_EMU_STREAMS=defer-streams",
		"DDPM_EMU_STREAM_LOG="+filepath.Join(dir, "log.%p"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("check stream_log: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("log.%d", cmd.Process.Pid)))
	if err != nil {
		t.Fatal(err)
	}
	want := "issue s1 host\nissue s1 record e1\nissue s0 wait e1 (s1:2)\nrun s1 host\nrun s1 record e1\n"
	if string(b) != want {
		t.Errorf("stream log:\n%s\nwant:\n%s", b, want)
	}
}

// A bad setting stops the process in cuInit, before anything runs with it.
func TestBadSettingsFailInit(t *testing.T) {
	need(t)
	bin := checkBin(t)
	for _, env := range []string{"DDPM_EMU_CC=8", "DDPM_EMU_CC=sm_80", "DDPM_EMU_MEM_MIB=0", "DDPM_EMU_MEM_MIB=1G",
		"DDPM_EMU_FAIL=alloc", "DDPM_EMU_FAIL=launch:x:0", "DDPM_EMU_FAIL=free:1", "DDPM_EMU_LEAKS=ignore",
		"DDPM_EMU_STREAMS=defer", "DDPM_EMU_STREAM_LOG=/nonexistent/dir/log"} {
		cmd := exec.Command(bin, "device")
		cmd.Env = append(cleanEnv(), "LD_LIBRARY_PATH="+libDir, env)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "cuInit") || !strings.Contains(string(out), "CUDA_ERROR_INVALID_VALUE") {
			t.Errorf("%s: %v, want cuInit to fail with CUDA_ERROR_INVALID_VALUE; output:\n%s", env, err, out)
		}
	}
}

// cleanEnv is the environment without the emulated driver's settings (the cases set their own).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DDPM_EMU_") && !strings.HasPrefix(kv, "LD_LIBRARY_PATH=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestCUDATaggedSuite runs every cuda-tagged test of ./cuda on the emulated driver, at compute capability 7.0 and
// 9.0. Together about 30 s on two cores, most of it the TF32 convolutions at 9.0.
func TestCUDATaggedSuite(t *testing.T) {
	need(t)
	if testing.Short() {
		t.Skip("-short: the cuda-tagged suite on the emulated driver takes about 30 s")
	}
	bin := cudaTest(t)
	for _, cc := range []string{"7.0", "9.0"} {
		t.Run("cc"+cc, func(t *testing.T) {
			start := time.Now()
			cmd := exec.Command(bin, "-test.count=1", "-test.timeout=10m")
			cmd.Dir = filepath.Join(root, "cuda")
			cmd.Env = append(cleanEnv(), "LD_LIBRARY_PATH="+libDir, "DDPM_EMU_CC="+cc)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("cuda-tagged tests at compute capability %s: %v\n%s", cc, err, out)
			}
			for _, want := range []string{"emudriver: emulated CUDA driver", "sm_" + strings.ReplaceAll(cc, ".", ""), "\nPASS"} {
				if !strings.Contains(string(out), want) {
					t.Fatalf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(string(out), "is not emulated") {
				t.Errorf("the cuda build called a driver function the emulated driver does not implement:\n%s", out)
			}
			t.Logf("compute capability %s: PASS in %v", cc, time.Since(start).Round(time.Second))
		})
	}
}
