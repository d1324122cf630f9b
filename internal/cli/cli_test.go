package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseStatuses(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
		ok     bool
		out    string
	}{
		{[]string{"-x", "3"}, OK, true, ""},
		{[]string{"-h"}, OK, false, "HEAD"},
		{[]string{"-nope"}, Usage, false, "flag provided but not defined"},
		{[]string{"-x", "3", "stray"}, Usage, false, `demo: unexpected argument "stray"`},
		{[]string{"-x", "three"}, Usage, false, "invalid value"},
	} {
		var stderr bytes.Buffer
		c := New("demo", "HEAD\n", "TAIL\n", &stderr)
		c.Int("x", 0, "a number")
		dev := c.Device()
		status, ok := c.Parse(tc.args)
		if status != tc.status || ok != tc.ok || !strings.Contains(stderr.String(), tc.out) {
			t.Errorf("%v: status %d ok %v, stderr %q; want %d %v containing %q", tc.args, status, ok, stderr.String(), tc.status, tc.ok, tc.out)
		}
		if *dev != "cpu" {
			t.Errorf("-device defaults to %q", *dev)
		}
		if tc.out == "HEAD" && !strings.Contains(stderr.String(), "TAIL") || tc.out == "HEAD" && !strings.Contains(stderr.String(), "-device") {
			t.Errorf("-h printed %q: want the head, the flags and the tail", stderr.String())
		}
	}
}

func TestUsagefAndFail(t *testing.T) {
	var stderr bytes.Buffer
	c := New("demo", "", "", &stderr)
	if s := c.Usagef("-n %d: must be ≥ 1", 0); s != Usage || stderr.String() != "demo: -n 0: must be ≥ 1\n" {
		t.Errorf("Usagef: %d %q", s, stderr.String())
	}
	stderr.Reset()
	if s := c.Fail(bytes.ErrTooLarge); s != Runtime || !strings.HasPrefix(stderr.String(), "demo: bytes.Buffer: too large") {
		t.Errorf("Fail: %d %q", s, stderr.String())
	}
	c.Parse([]string{})
	if set := c.Set(); len(set) != 0 {
		t.Errorf("Set after no flags: %v", set)
	}
}
