// Package progress draws a one-line progress bar on a terminal and stays silent elsewhere (CI logs get the
// trainer's periodic log lines instead). The bar is also an io.Writer for log lines: a line written through it
// clears the bar, is printed, and the bar is redrawn beneath it, so logs and bar share standard error cleanly.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// IsTerminal reports whether f is a character device (a terminal), the usual test without a termios call.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Width is the number of cells of the bar itself.
const Width = 24

// Bar is a progress bar over total units (steps, images). All methods are safe for concurrent use.
type Bar struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	total   int
	unit    string
	line    string // the last drawn bar, "" when none is on screen
	t0      time.Time
	done0   int
	started bool
	last    time.Time
	now     func() time.Time
}

// New returns a bar over total units written to w. With tty false it draws nothing and Write passes log lines
// straight through. total ≤ 0 means unknown: no bar and no ETA, only the count.
func New(w io.Writer, tty bool, total int, unit string) *Bar {
	return &Bar{w: w, tty: tty, total: total, unit: unit, now: time.Now}
}

// SetTotal changes the number of units the bar runs to (known only once a run has started) and restarts the rate
// measurement behind the ETA.
func (b *Bar) SetTotal(total int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total, b.started = total, false
}

// Active reports whether the bar draws (w is a terminal).
func (b *Bar) Active() bool { return b.tty }

// Update redraws the bar at done units with extra fields appended ("epoch 1 | loss 0.031 | 812 img/s").
// The rate behind the ETA is measured from the first Update, so set-up time does not count. Redraws are limited to
// ten a second except for the last unit.
func (b *Bar) Update(done int, extra string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if !b.started {
		b.started, b.t0, b.done0 = true, now, done
	}
	if !b.tty || (now.Sub(b.last) < 100*time.Millisecond && done != b.total) {
		return
	}
	b.last = now
	b.line = b.format(done, extra, now)
	fmt.Fprintf(b.w, "\r\x1b[K%s", b.line)
}

// format renders one bar line.
func (b *Bar) format(done int, extra string, now time.Time) string {
	var s strings.Builder
	if b.total > 0 {
		f := min(max(float64(done)/float64(b.total), 0), 1)
		full := int(f * Width)
		s.WriteString("[" + strings.Repeat("=", full))
		if full < Width {
			s.WriteString(">" + strings.Repeat(" ", Width-full-1))
		}
		fmt.Fprintf(&s, "] %d/%d %s %3.0f%%", done, b.total, b.unit, 100*f)
	} else {
		fmt.Fprintf(&s, "%d %s", done, b.unit)
	}
	if extra != "" {
		s.WriteString(" | " + extra)
	}
	if eta, ok := b.eta(done, now); ok {
		s.WriteString(" | ETA " + FormatDuration(eta))
	}
	return s.String()
}

// eta extrapolates the time left from the rate since the first Update.
func (b *Bar) eta(done int, now time.Time) (time.Duration, bool) {
	el := now.Sub(b.t0)
	if !b.started || b.total <= 0 || done <= b.done0 || el <= 0 {
		return 0, false
	}
	per := float64(el) / float64(done-b.done0)
	return time.Duration(per * float64(b.total-done)), true
}

// ETA is the estimated time left at done units (false before any progress can be measured).
func (b *Bar) ETA(done int) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eta(done, b.now())
}

// Write prints a log line above the bar: on a terminal the bar is cleared, p written, and the bar redrawn.
func (b *Bar) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tty || b.line == "" {
		return b.w.Write(p)
	}
	if _, err := io.WriteString(b.w, "\r\x1b[K"); err != nil {
		return 0, err
	}
	n, err := b.w.Write(p)
	if err == nil {
		_, err = io.WriteString(b.w, b.line)
	}
	return n, err
}

// Sync lets a Bar serve as a zap WriteSyncer.
func (b *Bar) Sync() error { return nil }

// Finish ends the bar's line so that later output starts on a fresh one.
func (b *Bar) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty && b.line != "" {
		io.WriteString(b.w, "\n")
	}
	b.line = ""
}

// FormatDuration prints d rounded to seconds as 1h02m03s, 2m03s or 3s.
func FormatDuration(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	switch {
	case s >= 3600:
		return fmt.Sprintf("%dh%02dm%02ds", s/3600, s/60%60, s%60)
	case s >= 60:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}
