//go:build cgo

package cpu_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// BenchmarkLayoutStreamAB times the celeba32 training step at bf16, batch 64, with dnnl_layout.c's streaming stores
// and without (stepAB):
//
//	go test ./cpu/ -run '^$' -bench LayoutStreamAB -benchtime 6x
func BenchmarkLayoutStreamAB(b *testing.B) { stepAB(b, cpu.LayoutStream, "stream", "store") }

// stepAB times the celeba32 training step at bf16, batch 64, with a switch on and off, interleaved in one process
// (the side that goes first alternates), so that the machine's load falls on both alike; it reports each side's time
// and their ratio. The switch is left on.
func stepAB(b *testing.B, set func(bool), on, off string) {
	be := cpu.New()
	if err := be.SetPrecision(ops.BF16); err != nil {
		if strings.Contains(err.Error(), "avx512_bf16") {
			b.Skipf("this CPU cannot run bf16: %v", err)
		}
		b.Fatal(err)
	}
	defer set(true)
	_, train := celeba32Step(b, be, 64)
	var d [2]time.Duration
	i := 0
	b.ResetTimer()
	for b.Loop() {
		for j := range 2 {
			k := (i + j) % 2
			set(k == 0)
			t0 := time.Now()
			train()
			d[k] += time.Since(t0)
		}
		i++
	}
	b.ReportMetric(1e3*d[0].Seconds()/float64(b.N), on+"-ms/step")
	b.ReportMetric(1e3*d[1].Seconds()/float64(b.N), off+"-ms/step")
	b.ReportMetric(d[1].Seconds()/d[0].Seconds(), on+"/"+off+"-speed")
}
