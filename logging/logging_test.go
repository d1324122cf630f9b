package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestJSONLinesParse(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("json", &buf, false)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("step", zap.Int("step", 7), zap.Float64("loss", 0.25))
	log.Debug("hidden")
	_ = log.Sync()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want 1 line (debug dropped), got %d: %q", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	if m["msg"] != "step" || m["step"] != float64(7) || m["loss"] != 0.25 || m["level"] != "info" {
		t.Fatalf("fields: %v", m)
	}
}

func TestConsoleReadable(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("console", &buf, true)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("shown", zap.String("device", "cpu"))
	_ = log.Sync()
	s := buf.String()
	if !strings.Contains(s, "DEBUG") || !strings.Contains(s, "shown") || !strings.Contains(s, `"device": "cpu"`) {
		t.Fatalf("console line: %q", s)
	}
	if json.Valid([]byte(strings.TrimSpace(s))) {
		t.Fatalf("console output should not be a JSON object: %q", s)
	}
}

func TestUnknownFormat(t *testing.T) {
	if _, err := New("xml", &bytes.Buffer{}, false); err == nil || !strings.Contains(err.Error(), "xml") {
		t.Fatalf("want an error naming the format, got %v", err)
	}
}
