package cpu

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Family is an op family of the time profile (see Backend.SetProfile).
type Family int

// The op families. Convolution backward is one call that interleaves its two GEMMs per
// block; its wall time is split between backward-data and backward-weight in
// proportion to the time the workers spent in each (im2col and the dw GEMM, plus the
// bias sum and the partial reduction, for weight; the dx GEMM and col2im for data).
const (
	FamConvFwd       Family = iota // Conv2D
	FamConvBwdData                 // Conv2DBackward: dx
	FamConvBwdWeight               // Conv2DBackward: dw, db
	FamGroupNorm                   // GroupNorm, GroupNormBackward, GroupNormSiLU, GroupNormSiLUBackward
	FamSiLU                        // SiLU, SiLUBackward
	FamAttention                   // Attention, AttentionBackward (q·kᵀ, softmax, p·v)
	FamLinear                      // Linear, LinearBackward (incl. attention projections)
	FamOptimizer                   // AdamWStep, EMA
	FamOther                       // everything else: fills, adds, concat, upsample, transpose, loss, ...
	numFamilies
)

var familyNames = [numFamilies]string{
	"conv forward", "conv backward-data", "conv backward-weight", "group norm",
	"SiLU", "attention (core)", "linear", "optimizer", "other",
}

func (f Family) String() string {
	if f < 0 || f >= numFamilies {
		return fmt.Sprintf("Family(%d)", int(f))
	}
	return familyNames[f]
}

// Profile is the wall time spent in each op family since profiling was switched on
// (or last reset), and the number of calls.
type Profile struct {
	Time  [numFamilies]time.Duration
	Calls [numFamilies]int
}

// Total is the sum of the family times.
func (p Profile) Total() time.Duration {
	var t time.Duration
	for _, d := range p.Time {
		t += d
	}
	return t
}

// Table formats the profile as a Markdown table, times divided by steps (the number of
// training steps profiled, ≥ 1), with each family's share of the total.
func (p Profile) Table(steps int) string {
	steps = max(1, steps)
	var sb strings.Builder
	tot := p.Total()
	fmt.Fprintf(&sb, "| op family | ms/step | share | calls/step |\n|---|---:|---:|---:|\n")
	for f := Family(0); f < numFamilies; f++ {
		share := 0.0
		if tot > 0 {
			share = 100 * float64(p.Time[f]) / float64(tot)
		}
		fmt.Fprintf(&sb, "| %s | %.1f | %.1f%% | %d |\n", f,
			p.Time[f].Seconds()*1e3/float64(steps), share, p.Calls[f]/steps)
	}
	fmt.Fprintf(&sb, "| total | %.1f | 100%% | |\n", tot.Seconds()*1e3/float64(steps))
	return sb.String()
}

// profiler holds the running profile; nil when profiling is off.
type profiler struct {
	p Profile
	// split[worker][0] and [1]: worker time in the weight and the data phases of
	// the current Conv2DBackward call.
	split [][2]time.Duration
}

// ProfileEnv is the environment variable that switches profiling on in New and New64
// when set to a non-empty value other than "0".
const ProfileEnv = "DDPM_CPU_PROFILE"

func profileFromEnv() bool {
	v := os.Getenv(ProfileEnv)
	return v != "" && v != "0"
}

// SetProfile switches the per-op-family timer on (resetting it) or off. Timing costs
// two clock reads per op (and per block inside the convolution backward pass) and
// never changes a result.
func (be *Backend[T]) SetProfile(on bool) {
	if on {
		be.prof = &profiler{split: make([][2]time.Duration, be.workers)}
	} else {
		be.prof = nil
	}
}

// Profile returns the profile so far (the zero Profile when profiling is off).
func (be *Backend[T]) Profile() Profile {
	if be.prof == nil {
		return Profile{}
	}
	return be.prof.p
}

// ResetProfile zeroes the profile (when profiling is on).
func (be *Backend[T]) ResetProfile() {
	if be.prof != nil {
		be.prof.p = Profile{}
	}
}

// start returns the current time when profiling, else the zero time.
func (be *Backend[T]) start() time.Time {
	if be.prof == nil {
		return time.Time{}
	}
	return time.Now()
}

// stop charges the time since t0 to family f (used as `defer be.stop(f, be.start())`).
func (be *Backend[T]) stop(f Family, t0 time.Time) {
	if be.prof == nil {
		return
	}
	be.prof.p.Time[f] += time.Since(t0)
	be.prof.p.Calls[f]++
}

// phase returns the current time when profiling, else the zero time, for the per-worker
// phase timers of the convolution backward pass.
func (be *Backend[T]) phase() time.Time { return be.start() }

// endPhase adds the time since t0 to worker wk's phase ph (0 weight, 1 data).
func (be *Backend[T]) endPhase(wk, ph int, t0 time.Time) {
	if be.prof == nil {
		return
	}
	be.prof.split[wk][ph] += time.Since(t0)
}

// convBwdStart is start for Conv2DBackward: it also sizes the per-worker phase timers
// (be.workers may have changed since SetProfile).
func (be *Backend[T]) convBwdStart() time.Time {
	if be.prof == nil {
		return time.Time{}
	}
	for len(be.prof.split) < be.workers {
		be.prof.split = append(be.prof.split, [2]time.Duration{})
	}
	return time.Now()
}

// convBwdSplit charges a Conv2DBackward call that began at t0 to backward-weight and
// backward-data in proportion to the workers' phase times, and clears them.
func (be *Backend[T]) convBwdSplit(t0 time.Time) {
	pr := be.prof
	if pr == nil {
		return
	}
	wall := time.Since(t0)
	var w, d time.Duration
	for i := range pr.split {
		w += pr.split[i][0]
		d += pr.split[i][1]
		pr.split[i] = [2]time.Duration{}
	}
	dataShare := 0.0
	if w+d > 0 {
		dataShare = float64(d) / float64(w+d)
	}
	dd := time.Duration(dataShare * float64(wall))
	pr.p.Time[FamConvBwdData] += dd
	pr.p.Time[FamConvBwdWeight] += wall - dd
	pr.p.Calls[FamConvBwdData]++
	pr.p.Calls[FamConvBwdWeight]++
}
