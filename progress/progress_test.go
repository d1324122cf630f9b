package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBarOnTerminal(t *testing.T) {
	var out bytes.Buffer
	c := &clock{t: time.Unix(0, 0)}
	b := New(&out, true, 100, "steps")
	b.now = c.now
	b.Update(0, "")
	c.t = c.t.Add(10 * time.Second)
	b.Update(50, "loss 0.5")
	got := out.String()
	last := got[strings.LastIndex(got, "\r\x1b[K")+4:]
	want := "[" + strings.Repeat("=", Width/2) + ">" + strings.Repeat(" ", Width/2-1) + "] 50/100 steps  50% | loss 0.5 | ETA 10s"
	if last != want {
		t.Errorf("bar\n got %q\nwant %q", last, want)
	}
	// A log line clears the bar, prints, and redraws it.
	out.Reset()
	b.Write([]byte("INFO hello\n"))
	if out.String() != "\r\x1b[KINFO hello\n"+want {
		t.Errorf("log line through bar: %q", out.String())
	}
	// Redraws within 100 ms are dropped, except the final one.
	out.Reset()
	c.t = c.t.Add(50 * time.Millisecond)
	b.Update(51, "")
	if out.Len() != 0 {
		t.Errorf("redraw not throttled: %q", out.String())
	}
	b.Update(100, "")
	if !strings.Contains(out.String(), "100/100") {
		t.Errorf("final update dropped: %q", out.String())
	}
	b.Finish()
	if !strings.HasSuffix(out.String(), "\n") {
		t.Error("Finish did not end the line")
	}
}

func TestBarOffTerminalIsSilent(t *testing.T) {
	var out bytes.Buffer
	b := New(&out, false, 10, "steps")
	b.Update(1, "x")
	b.Update(10, "x")
	b.Finish()
	if out.Len() != 0 {
		t.Errorf("non-terminal bar wrote %q", out.String())
	}
	b.Write([]byte("line\n"))
	if out.String() != "line\n" {
		t.Errorf("log passthrough %q", out.String())
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		3 * time.Second: "3s", 123 * time.Second: "2m03s", 3723 * time.Second: "1h02m03s", 1499 * time.Millisecond: "1s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("%v: %q want %q", d, got, want)
		}
	}
}
