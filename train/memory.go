package train

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
)

// DeviceMemory is implemented by backends with memory of their own (a GPU): the driver's free and total bytes.
// The trainer checks for it with a type assertion, so backends without it (the CPU) need nothing.
type DeviceMemory interface {
	MemInfo() (free, total int64, err error)
}

// Memory is the estimate of what a run needs, compared with what is available, before anything is allocated.
//
// The training step's bytes are model.Summary's: 5·P·4 for the weights, gradients, AdamW m and v and the EMA, plus
// B·w·4 of workspace (saved activations, activation gradients, scratch) for w floats per image, so they are affine
// in the batch B: step(B) = Fixed + B·PerImage. The data set is held as uint8 in host memory (Data bytes).
//
// On the CPU everything shares host memory: need = step(B) + Data, against MemAvailable of /proc/meminfo. With a
// DeviceMemory backend the step lives on the device, with the data set kept resident there too when it is at most
// residentMaxBytes (Data + 4·N bytes for the uint8 images and an epoch's int32 order, see feed.go), against
// the device's free memory; the host holds the data set as well.
//
// The formula does not know a GPU backend's own device memory (its grow-only scratch of packed conv operands,
// split-K partials and attention and group-norm temporaries, the persistent packed conv weights), nor that at bf16
// those operands are half as large. With a DeviceTracer (Trace) the device step is measured instead: the step is
// run over a driver that holds no memory and counts the live bytes (memtrace.DeviceStep), at the run's batch
// and at half of it, and Fixed and PerImage become the line through the two peaks, so that Step() is the traced
// peak at the run's batch and fit extrapolates along it.
type Memory struct {
	Batch         int
	Fixed         int64 // step bytes that do not grow with the batch (weights, gradients, moments, EMA)
	PerImage      int64 // step bytes per image of the batch (model.Summary's, plus Copies on the host)
	Copies        int64 // of PerImage: the CPU backend's copies of a convolution's operands (hostCopyBytes)
	Kept          int64 // bytes per image that the convolution inputs kept in fewer bytes save (KeptLener); 0: none
	Precision     string
	Data          int64 // data set bytes (N·C·H·W)
	Resident      int64 // device bytes of the resident data set (Device only; 0 when it streams from the host)
	HostAvail     int64 // MemAvailable; −1 when unknown (not Linux)
	Device        bool  // the step lives on a device with its own memory
	DeviceAvail   int64 // the device's free bytes (Device only); −1 when unknown
	DeviceName    string
	Traced        *DeviceStep // the device step measured at Batch (Trace); nil: the formula
	Formula       int64       // with Traced: model.Summary's step bytes at Batch, for comparison
	TracedAt      int         // with Traced: the second batch traced (the slope's other end)
	traceErr      error       // why Trace left the formula in place
	hostErr, dErr error
}

// DeviceStep is a training step's device memory as a trace measures it (memtrace.DeviceStep): TraceStep's
// set-up and two steps on a fresh GPU backend over a driver that holds no memory (cuda.DryDriver) and keeps the
// peak of the live bytes. What the trace leaves out: sampling (the trace sets the sampler up for one image, a run
// for sample.count, and samples nothing) and, on several ranks, the gradient buckets.
type DeviceStep struct {
	Batch     int
	Precision string // the precision the trace ran at ("auto" resolved)
	Peak      int64  // the most device bytes live at once, the trace's resident random images left out
	// The backend's own device memory at the end of the trace (cuda.OwnMemory; each only grows, so this is the most
	// it held): the launchers' scratch, the packed conv weights with their table, the reduction partials and tickets.
	Scratch, Packed, Fixed int64
}

// Own is the backend's own bytes; Buffers the rest of Peak, the buffers the trainer allocates (weights, gradients,
// AdamW moments, EMA, saved activations and their gradients, the batch). (Own is taken at the end of the trace, at
// least what it was at the peak, so Buffers is at most what they were then.)
func (s DeviceStep) Own() int64     { return s.Scratch + s.Packed + s.Fixed }
func (s DeviceStep) Buffers() int64 { return s.Peak - s.Own() }

// DeviceTracer measures cfg's training step on a GPU backend at cfg's train.batch_size and train.precision without
// a device (memtrace.DeviceStep).
type DeviceTracer func(cfg config.Config) (DeviceStep, error)

// traceMaxHostBytes bounds the random images of a trace (TraceStep trains on at least a batch of them): a batch
// beyond it is not traced (it fits no device anyway) and keeps the formula.
const traceMaxHostBytes = 1 << 30

// hostCopyBytes is, per element of the largest activation, what the CPU backend holds besides the model's buffers:
// oneDNN's copies of one convolution's operands in its blocked layouts (dnnl.c: x, y, dy twice — the backward-data
// and backward-weights layouts — and dx), each at most the largest activation. At fp32 all five are float32 (20 B);
// at bf16, x and both dy are bf16 and y and dx float32 (3 × 2 + 2 × 4 = 14 B), plus the copies of x and dy with
// images side by side that backward-weights takes at 8 pixels wide or less (dnnl.c's stackRows): bf16, each at most
// 5/4 of its tensor for images 4 to 8 wide (a zero column per image: 71 columns for 64 pixels at 8 wide, 69 for 56
// at 4 wide; narrower ones are far below the largest activation in any U-Net that downsamples to them), so 5 B more
// (19 B). The saved activations that the CPU backend keeps in bf16 (ops.ConvInputKeeper) are model.SummaryKept's.
func hostCopyBytes(precision string) int64 {
	if precision == "bf16" {
		return 3*2 + 2*4 + 2*2*5/4
	}
	return 5 * 4
}

// Step is model.Summary's training-step bytes at the run's batch (with the CPU backend's copies on the host).
func (m Memory) Step() int64 { return m.Fixed + int64(m.Batch)*m.PerImage }

// KeptLener is what the host estimate needs of a backend that keeps convolution inputs in fewer bytes
// (ops.ConvInputKeeper): their kept lengths.
type KeptLener interface {
	KeptLen(s ops.ConvShape) int
}

// EstimateMemory builds the estimate for cfg with dataImages images on be (nil: host memory, nothing kept).
func EstimateMemory(cfg config.Config, be ops.Backend, dataImages int) (Memory, error) {
	dm, device := be.(DeviceMemory)
	if !device {
		kl, _ := be.(KeptLener)
		return hostEstimate(cfg, dataImages, kl)
	}
	m, err := estimate(cfg, dataImages, nil)
	if err != nil {
		return m, err
	}
	m.setDevice(be.Name(), dataImages)
	free, _, err := dm.MemInfo()
	if err != nil {
		m.DeviceAvail, m.dErr = -1, err
	} else {
		m.DeviceAvail = free
	}
	return m, nil
}

// setDevice makes m a device estimate: the step on the device named name, with the data set resident there when
// small enough.
func (m *Memory) setDevice(name string, dataImages int) {
	m.Device, m.DeviceName = true, name
	if m.Data <= residentMaxBytes {
		m.Resident = m.Data + 4*int64(dataImages)
	}
}

// hostEstimate is the estimate of a step on the host: model.Summary's with the inputs kl keeps (nil: none) at
// their kept lengths, plus the CPU backend's operand copies.
func hostEstimate(cfg config.Config, dataImages int, kl KeptLener) (Memory, error) {
	m, err := estimate(cfg, dataImages, kl)
	if err != nil {
		return m, err
	}
	c, s := cfg.Data.Channels, cfg.Data.ImageSize
	m.Copies = hostCopyBytes(cfg.Train.Precision) * int64(model.LargestTensor(cfg.Model, c, s))
	m.PerImage += m.Copies
	return m, nil
}

// estimate is model.Summary's step (the convolution inputs that kl keeps at their kept lengths; nil: none) and the
// data set's bytes.
func estimate(cfg config.Config, dataImages int, kl KeptLener) (Memory, error) {
	c, s, b := cfg.Data.Channels, cfg.Data.ImageSize, cfg.Train.BatchSize
	var keptPer func(ops.ConvShape) int
	if kl != nil {
		keptPer = kl.KeptLen
	}
	_, p1, s1 := model.SummaryKept(cfg.Model, c, s, 1, keptPer)
	_, _, s2 := model.SummaryKept(cfg.Model, c, s, 2, keptPer)
	if p1 == 0 {
		return Memory{}, fmt.Errorf("train: memory estimate: the model does not build (see -dry-run)")
	}
	m := Memory{Batch: b, PerImage: s2 - s1, Fixed: s1 - (s2 - s1), Data: int64(dataImages) * int64(c*s*s),
		HostAvail: -1, DeviceAvail: -1, Precision: cfg.Train.Precision}
	if kl != nil {
		_, _, f1 := model.Summary(cfg.Model, c, s, 1)
		_, _, f2 := model.Summary(cfg.Model, c, s, 2)
		m.Kept = (f2 - f1) - m.PerImage
	}
	m.HostAvail, m.hostErr = hostMemAvailable()
	return m, nil
}

// Trace replaces a device estimate's formula by trace's measurements (see Memory): the peak at m.Batch and at a
// second batch (half of it; 2 for batch 1) fix the line Fixed + B·PerImage. The two points rather than the peak
// alone keep fit's advice: the step is affine in the batch but for the scratch, which grows by doubling, so the
// line is close near the run's batch. The traced peak replaces the formula rather than being added to it as the
// backend's own bytes: the trace sees what the launchers hold at once (a launcher that holds more scratch shows
// up without a change here) and the trainer's buffers as allocated, not as model.Summary models them. When the
// trace cannot run (or the batch is hopeless: its formula is over four
// times the device's free memory, or its random images over traceMaxHostBytes), the formula stays and String says
// why; the error is returned too.
func (m *Memory) Trace(cfg config.Config, trace DeviceTracer) error {
	err := m.trace(cfg, trace)
	m.traceErr = err
	return err
}

func (m *Memory) trace(cfg config.Config, trace DeviceTracer) error {
	b, d := m.Batch, int64(cfg.Data.Channels*cfg.Data.ImageSize*cfg.Data.ImageSize)
	switch {
	case !m.Device:
		return fmt.Errorf("not a device estimate")
	case int64(b)*d > traceMaxHostBytes:
		return fmt.Errorf("batch %d: not traced (its random images would take %s of host memory)", b, gib(int64(b)*d))
	case m.DeviceAvail >= 0 && m.Step() > 4*m.DeviceAvail:
		return fmt.Errorf("batch %d: not traced (the formula's %s is over four times the free %s)", b, gib(m.Step()), gib(m.DeviceAvail))
	}
	b2 := b / 2
	if b2 < 1 {
		b2 = 2
	}
	at := func(batch int) (DeviceStep, error) {
		c := cfg
		c.Train.BatchSize = batch
		s, err := trace(c)
		if err != nil {
			return s, fmt.Errorf("device step trace at batch %d: %w", batch, err)
		}
		return s, nil
	}
	s1, err := at(b)
	if err != nil {
		return err
	}
	s2, err := at(b2)
	if err != nil {
		return err
	}
	per := max((s1.Peak-s2.Peak)/int64(b-b2), 1)
	m.Formula, m.Traced, m.TracedAt = m.Step(), &s1, b2
	m.PerImage, m.Fixed = per, s1.Peak-int64(b)*per
	return nil
}

// fit is the largest batch whose step fits in avail bytes next to other bytes (0 if not even one image fits).
func (m Memory) fit(avail, other int64) int {
	left := avail - other - m.Fixed
	if left < m.PerImage || m.PerImage <= 0 {
		return 0
	}
	return int(left / m.PerImage)
}

// Check returns nil when the run fits, and otherwise an error with the memory needed, the memory available and the
// largest train.batch_size that fits. Unknown availability is not an error.
func (m Memory) Check() error {
	need, avail, where := m.Step()+m.Data, m.HostAvail, "host memory (MemAvailable in /proc/meminfo)"
	other := m.Data
	if m.Device {
		need, avail, where, other = m.Step()+m.Resident, m.DeviceAvail, "free memory on "+m.DeviceName, m.Resident
		if m.HostAvail >= 0 && m.Data > m.HostAvail {
			return fmt.Errorf("train: the data set needs %s of host memory, only %s is available (MemAvailable); lower data.max_items",
				gib(m.Data), gib(m.HostAvail))
		}
	}
	if avail < 0 || need <= avail {
		return nil
	}
	msg := fmt.Sprintf("train: batch %d needs about %s (training step %s: %s fixed + %d × %s per image; data set %s), but only %s of %s is available",
		m.Batch, gib(need), gib(m.Step()), gib(m.Fixed), m.Batch, gib(m.PerImage), gib(m.Data), gib(avail), where)
	if k := m.fit(avail, other); k > 0 {
		msg += fmt.Sprintf("; train.batch_size = %d fits (raise train.grad_accum to keep the effective batch)", k)
	} else {
		msg += "; not even batch 1 fits: use a smaller model or fewer images"
	}
	return fmt.Errorf("%s", msg)
}

// String is the estimate as -dry-run prints it.
func (m Memory) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "memory estimate at batch %d, precision %s: training step %s (%s fixed + %s per image) + data set %s\n",
		m.Batch, m.Precision, gib(m.Step()), gib(m.Fixed), gib(m.PerImage), gib(m.Data))
	if t := m.Traced; t != nil {
		fmt.Fprintf(&b, "  device step traced at %s (set-up and two steps over a driver that holds no memory): peak %s\n", t.Precision, gib(t.Peak))
		fmt.Fprintf(&b, "    trainer's buffers %s (weights, gradients, AdamW m and v, EMA, activations, batch)\n", gib(t.Buffers()))
		fmt.Fprintf(&b, "    backend's own %s: scratch %s, packed conv weights %s, reduction partials and tickets %d KiB\n",
			gib(t.Own()), gib(t.Scratch), gib(t.Packed), t.Fixed>>10)
		fmt.Fprintf(&b, "    fixed and per image: the line through the traces at batch %d and %d; model.Summary's formula: %s\n",
			m.Batch, m.TracedAt, gib(m.Formula))
	} else if m.traceErr != nil {
		fmt.Fprintf(&b, "  device step from model.Summary's formula (the backend's scratch and packed weights not counted): %v\n", m.traceErr)
	}
	if m.Copies > 0 {
		fmt.Fprintf(&b, "  of which the CPU backend's convolution operand copies: %s per image (%s)\n", gib(m.Copies), copyNote(m.Precision))
	}
	if m.Kept > 0 {
		fmt.Fprintf(&b, "  convolution inputs saved for backward in bf16 (NHWC, the CPU backend's kept form): %s less per image "+
			"than in float32\n", gib(m.Kept))
	}
	switch {
	case m.Device && m.DeviceAvail >= 0:
		fmt.Fprintf(&b, "  %s free: %s (resident data set %s); largest batch that fits: %d\n", m.DeviceName, gib(m.DeviceAvail),
			gib(m.Resident), m.fit(m.DeviceAvail, m.Resident))
	case m.Device:
		fmt.Fprintf(&b, "  %s free memory unknown (%v)\n", m.DeviceName, m.dErr)
	}
	if m.HostAvail >= 0 {
		if m.Device {
			fmt.Fprintf(&b, "  host MemAvailable: %s (holds the data set)\n", gib(m.HostAvail))
		} else {
			fmt.Fprintf(&b, "  host MemAvailable: %s; largest batch that fits: %d\n", gib(m.HostAvail), m.fit(m.HostAvail, m.Data))
		}
	} else {
		fmt.Fprintf(&b, "  host memory available: unknown (%v)\n", m.hostErr)
	}
	if err := m.Check(); err != nil {
		fmt.Fprintf(&b, "  DOES NOT FIT: %v\n", err)
	}
	return b.String()
}

func gib(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	default:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
}

// hostMemAvailable reads MemAvailable (the kernel's estimate of memory available to a new program without
// swapping) from /proc/meminfo; −1 with an error elsewhere.
var hostMemAvailable = func() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return -1, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			fields := strings.Fields(rest)
			if len(fields) == 2 && fields[1] == "kB" {
				kb, err := strconv.ParseInt(fields[0], 10, 64)
				if err == nil {
					return kb << 10, nil
				}
			}
			return -1, fmt.Errorf("/proc/meminfo: unreadable MemAvailable line %q", sc.Text())
		}
	}
	return -1, fmt.Errorf("/proc/meminfo has no MemAvailable line")
}

// DryRunMemory is the estimate for cfg on the host before anything is loaded, as -dry-run prints it, with the
// convolution inputs that kl keeps (the CPU backend's at cfg's precision: backend.HostKeptLen; nil: none): the data
// set's size comes from its headers or listing (data.Count). When the data set cannot be counted (not there yet),
// the estimate leaves it out and the text says so.
func DryRunMemory(cfg config.Config, kl KeptLener) string {
	n, cerr := data.Count(cfg.Data.Path, data.Options{MaxItems: cfg.Data.MaxItems})
	m, err := hostEstimate(cfg, n, kl)
	if err != nil {
		return err.Error() + "\n"
	}
	return dryRunText(m, cerr)
}

// DryRunDeviceMemory is DryRunMemory for a run on the GPU backend that -device names, which -dry-run does not open:
// the device step is trace's (Memory.Trace), at cfg's batch and precision; the device's free memory is unknown.
func DryRunDeviceMemory(cfg config.Config, device string, trace DeviceTracer) string {
	n, cerr := data.Count(cfg.Data.Path, data.Options{MaxItems: cfg.Data.MaxItems})
	m, err := estimate(cfg, n, nil)
	if err != nil {
		return err.Error() + "\n"
	}
	m.setDevice(device, n)
	m.dErr = fmt.Errorf("-dry-run opens no device")
	m.Trace(cfg, trace) // an error is printed by String
	return dryRunText(m, cerr)
}

func dryRunText(m Memory, cerr error) string {
	s := m.String()
	if cerr != nil {
		s += fmt.Sprintf("  (data set left out: %v)\n", cerr)
	}
	return s
}

func copyNote(precision string) string {
	if precision == "bf16" {
		return "x and dy in bf16, y and dx in fp32"
	}
	return "x, y, dy and dx in fp32"
}
