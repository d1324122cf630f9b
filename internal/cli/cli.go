// Package cli is the command-line plumbing that bin/train, bin/sample and bin/pack share: exit statuses, flag
// parsing that maps help and errors onto them, signal handling, the -device flag and the progress bar on stderr.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/progress"
)

// Exit statuses of every command.
const (
	OK      = 0 // success (also bin/train after SIGINT/SIGTERM, which checkpoint first)
	Runtime = 1 // a runtime failure: bad data, a damaged checkpoint, a device error, an interrupted bin/sample
	Usage   = 2 // a usage or config error
)

// Main exits with run's status. run's context is cancelled by the first SIGINT or SIGTERM (the command finishes
// what it must and returns); a second signal kills the process at once, as the default handler does.
func Main(run func(ctx context.Context, args []string, stdout, stderr io.Writer) int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // restores the default handlers: the next signal kills
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// Command is one command's flags and its error output.
type Command struct {
	*flag.FlagSet
	name   string
	stderr io.Writer
}

// New returns the flag set of command name: -h prints head, the flags' defaults and then tail.
func New(name, head, tail string, stderr io.Writer) *Command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, head)
		fs.PrintDefaults()
		fmt.Fprint(stderr, tail)
	}
	return &Command{FlagSet: fs, name: name, stderr: stderr}
}

// Device registers -device (default cpu; see package backend).
func (c *Command) Device() *string { return c.String("device", "cpu", backend.Usage) }

// Bench registers -bench (steps to time, 0: no benchmark) and -bench-warmup (untimed steps before them, default
// warmup); what says what a step is. CheckBench validates them after Parse.
func (c *Command) Bench(what string, warmup int) (steps, warm *int) {
	steps = c.Int("bench", 0, "time `N` "+what+" after -bench-warmup steps, print a bench: line and exit")
	warm = c.Int("bench-warmup", warmup, "untimed warm-up steps before -bench")
	return steps, warm
}

// CheckBench returns Usage with a message when -bench or -bench-warmup is negative, else OK.
func (c *Command) CheckBench(steps, warm int) int {
	if steps < 0 || warm < 0 {
		return c.Usagef("-bench %d -bench-warmup %d: must be ≥ 0", steps, warm)
	}
	return OK
}

// Parse parses args, which must hold flags only. It returns ok = false with the status to exit with when the
// command is done: OK after -h, Usage after a bad flag or a stray argument (with the message printed).
func (c *Command) Parse(args []string) (status int, ok bool) {
	if err := c.FlagSet.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return OK, false
		}
		return Usage, false
	}
	if c.NArg() > 0 {
		return c.Usagef("unexpected argument %q (flags only; see -h)", c.Arg(0)), false
	}
	return OK, true
}

// Set says which flags were given on the command line.
func (c *Command) Set() map[string]bool {
	set := map[string]bool{}
	c.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// Usagef prints "name: message" and returns Usage.
func (c *Command) Usagef(format string, args ...any) int {
	fmt.Fprintf(c.stderr, c.name+": "+format+"\n", args...)
	return Usage
}

// Fail prints "name: err" and returns Runtime.
func (c *Command) Fail(err error) int {
	fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
	return Runtime
}

// Bar is a progress bar on stderr counting unit: drawn in place on a terminal, plain lines otherwise.
func (c *Command) Bar(unit string) *progress.Bar {
	tty := false
	if f, ok := c.stderr.(*os.File); ok {
		tty = progress.IsTerminal(f)
	}
	return progress.New(c.stderr, tty, 0, unit)
}
