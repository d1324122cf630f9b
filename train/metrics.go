package train

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/ops"
)

// Metrics is one line of metrics.jsonl, written after step 1, every train.log_every steps and after the last step.
type Metrics struct {
	Step         int     `json:"step"`
	Epoch        float64 `json:"epoch"`                  // epochs done, with the fraction of the current one
	Loss         float64 `json:"loss"`                   // mean ε-MSE over the steps since the previous line
	LR           float64 `json:"lr"`                     // learning rate of the last step
	GradNorm     float64 `json:"grad_norm"`              // mean global gradient norm (before clipping) over those steps
	ImagesPerSec float64 `json:"images_per_sec"`         // training images per second over those steps
	ElapsedSec   float64 `json:"elapsed_s"`              // wall-clock seconds since this process started the loop
	Skipped      int     `json:"skipped,omitempty"`      // steps skipped so far for a NaN/Inf (train.skip_nonfinite)
	WriteErrors  int     `json:"write_errors,omitempty"` // failed writes so far (train.on_write_error = "continue")
}

// window gathers the step controller's reads between two metrics lines, and the progress bar's smoothed loss.
type window struct {
	loss, norm float64 // sums over the updated steps since the last line
	steps      int
	start      time.Time // of the window
	smoothSum  float64   // the bar's loss: an exponential average over ~50 steps, bias-corrected as Adam's moments
	smoothW    float64   // so that it is not dragged towards its zero start
}

// add takes in a read of the step controller.
func (w *window) add(r ops.Window) {
	if r.Steps == 0 {
		return
	}
	w.loss += r.Loss
	w.norm += r.Norm
	w.steps += r.Steps
	// As if each step of the read had had its mean loss.
	f := math.Pow(0.98, float64(r.Steps))
	w.smoothSum = f*w.smoothSum + (1-f)*r.Loss/float64(r.Steps)
	w.smoothW = f*w.smoothW + (1 - f)
}

// smooth is the bar's loss (NaN before the first update).
func (w *window) smooth() float64 {
	if w.smoothW == 0 {
		return math.NaN()
	}
	return w.smoothSum / w.smoothW
}

// line is the metrics line of the window, which it then restarts; the caller fills the rest.
func (w *window) line(now time.Time, imagesPerStep int) Metrics {
	m := Metrics{Loss: w.loss / float64(w.steps), GradNorm: w.norm / float64(w.steps),
		ImagesPerSec: float64(w.steps*imagesPerStep) / now.Sub(w.start).Seconds()}
	w.loss, w.norm, w.steps, w.start = 0, 0, 0, now
	return m
}

// metricsLog is metrics.jsonl, opened for appending, and the lines written so far (for the loss plot).
type metricsLog struct {
	f       *os.File
	history []Metrics
}

// openMetrics opens path for appending. On a resume, lines past the checkpoint's step (written by the interrupted
// process after its last checkpoint) are dropped first, so the file reads as one uninterrupted run.
func openMetrics(path string, resumed bool, step int) (*metricsLog, error) {
	ml := &metricsLog{}
	if resumed {
		if b, err := os.ReadFile(path); err == nil {
			var keep []byte
			for _, line := range strings.SplitAfter(string(b), "\n") {
				var m Metrics
				if json.Unmarshal([]byte(line), &m) != nil || m.Step > step {
					continue
				}
				keep = append(keep, line...)
				ml.history = append(ml.history, m)
			}
			if err := atomicfile.WriteBytes(path, keep); err != nil {
				return nil, fmt.Errorf("train: %w", err)
			}
		}
	}
	flag := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !resumed {
		flag |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, fmt.Errorf("train: metrics: %w", err)
	}
	ml.f = f
	return ml, nil
}

// write appends m. A failed append (a full disk) is cut back off, so that the file never holds a partial line.
func (ml *metricsLog) write(m Metrics) error {
	ml.history = append(ml.history, m)
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("train: metrics: %w", err)
	}
	st, serr := ml.f.Stat()
	if _, err := ml.f.Write(append(b, '\n')); err != nil {
		if serr == nil {
			ml.f.Truncate(st.Size())
		}
		return fmt.Errorf("train: metrics %s: %w", ml.f.Name(), err)
	}
	return nil
}

// sync makes the lines so far durable (before a checkpoint names them).
func (ml *metricsLog) sync() { ml.f.Sync() }

func (ml *metricsLog) close() {
	if ml != nil && ml.f != nil {
		ml.f.Close()
	}
}
