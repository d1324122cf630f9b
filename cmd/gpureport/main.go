// Command gpureport writes docs/gpu-perf.md: the SASS of every kernel (ptxas for sm_80 and sm_90, nvdisasm),
// registers, spills, shared memory, occupancy, main-loop instruction mix, and an on-paper roofline of the celeba32
// training step on an H100 (package internal/gpureport). Needs ptxas and nvdisasm (scripts/setup.sh --cuda).
//
//	gpureport                      write docs/gpu-perf.md (make gpu-report)
//	gpureport -check               regenerate and fail when docs/gpu-perf.md differs (make gpu-report-check, CI)
//	gpureport -write-baseline MSG  also write the key numbers to docs/gpu-perf-baseline.tsv, under comment MSG
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ddpmgo/ddpm/internal/gpureport"
)

func main() {
	root := flag.String("root", ".", "repository root")
	out := flag.String("out", "docs/gpu-perf.md", "the report, relative to -root")
	check := flag.Bool("check", false, "do not write: fail when the report differs from what would be written")
	baseline := flag.String("write-baseline", "", "also write the key numbers to the baseline file with this comment")
	ptxas := flag.String("ptxas", "ptxas", "ptxas binary")
	nvdisasm := flag.String("nvdisasm", "nvdisasm", "nvdisasm binary")
	cuobjdump := flag.String("cuobjdump", "cuobjdump", "cuobjdump binary (for a listing nvdisasm gets wrong)")
	flag.Parse()
	tools := gpureport.Tools{Ptxas: *ptxas, Nvdisasm: *nvdisasm, Cuobjdump: *cuobjdump}
	if err := run(*root, *out, *check, *baseline, tools); err != nil {
		fmt.Fprintln(os.Stderr, "gpureport:", err)
		os.Exit(1)
	}
}

func run(root, out string, check bool, baseline string, tools gpureport.Tools) error {
	o := gpureport.DefaultOptions(root)
	o.Tools = tools
	rep, err := gpureport.Generate(o)
	if err != nil {
		return err
	}
	path := out
	if !filepath.IsAbs(path) {
		path = filepath.Join(root, filepath.FromSlash(out))
	}
	if check {
		old, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%v (create it with make gpu-report)", err)
		}
		if bytes.Equal(old, []byte(rep.Markdown)) {
			fmt.Printf("gpu-report-check: %s is current\n", out)
			return nil
		}
		tmp, err := os.CreateTemp("", "gpu-perf-*.md")
		if err != nil {
			return err
		}
		defer tmp.Close()
		if _, err := tmp.WriteString(rep.Markdown); err != nil {
			return err
		}
		return fmt.Errorf("%s is stale: it differs from what the kernels and launchers give now (first difference: %s); run make gpu-report (the fresh report is in %s)",
			out, firstDiff(string(old), rep.Markdown), tmp.Name())
	}
	if err := os.WriteFile(path, []byte(rep.Markdown), 0o644); err != nil {
		return err
	}
	fmt.Printf("gpureport: wrote %s\n", out)
	if baseline != "" {
		bp := filepath.Join(root, filepath.FromSlash(o.Baseline))
		if err := gpureport.WriteBaseline(bp, baseline, rep.Metrics); err != nil {
			return err
		}
		fmt.Printf("gpureport: wrote %s (run make gpu-report again to show it in %s)\n", o.Baseline, out)
	}
	return nil
}

// firstDiff names the first line where a and b differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < max(len(al), len(bl)); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d, committed %q, now %q", i+1, x, y)
		}
	}
	return "none"
}
