// Package logging builds the trainer's zap loggers: readable console lines by default,
// JSON lines on request.
package logging

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger writing to w in the given format: "console" (human-readable,
// ISO-8601 times, level in capitals) or "json" (one JSON object per line, for log
// collectors). Debug lines are dropped unless debug is set.
func New(format string, w io.Writer, debug bool) (*zap.Logger, error) {
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	switch format {
	case "console", "":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		ec.ConsoleSeparator = "  "
		enc = zapcore.NewConsoleEncoder(ec)
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	default:
		return nil, fmt.Errorf("log format %q: allowed: console, json", format)
	}
	level := zapcore.InfoLevel
	if debug {
		level = zapcore.DebugLevel
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)), nil
}

// Stderr is New writing to standard error.
func Stderr(format string, debug bool) (*zap.Logger, error) { return New(format, os.Stderr, debug) }
