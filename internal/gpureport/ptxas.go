package gpureport

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Resources are what `ptxas -v` reports for one entry function on one SM.
type Resources struct {
	Regs        int // registers per thread
	Smem        int // static shared memory per block, bytes
	Stack       int // stack frame, bytes
	SpillStores int // bytes
	SpillLoads  int // bytes
}

var (
	reCompiling = regexp.MustCompile(`Compiling entry function '([^']+)' for '(sm_\d+)'`)
	reProps     = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
	reUsed      = regexp.MustCompile(`Used (\d+) registers(?:, (\d+) bytes smem)?`)
)

// ParsePtxasV reads the stderr of `ptxas -v` for one module and one SM: the resources of each entry function.
func ParsePtxasV(text string) (map[string]Resources, error) {
	out := map[string]Resources{}
	cur := ""
	for _, line := range strings.Split(text, "\n") {
		if m := reCompiling.FindStringSubmatch(line); m != nil {
			cur = m[1]
			out[cur] = Resources{}
			continue
		}
		if cur == "" {
			continue
		}
		r := out[cur]
		if m := reProps.FindStringSubmatch(line); m != nil {
			r.Stack, r.SpillStores, r.SpillLoads = atoi(m[1]), atoi(m[2]), atoi(m[3])
		} else if m := reUsed.FindStringSubmatch(line); m != nil {
			r.Regs = atoi(m[1])
			if m[2] != "" {
				r.Smem = atoi(m[2])
			}
		} else {
			continue
		}
		out[cur] = r
	}
	for k, r := range out {
		if r.Regs == 0 {
			return nil, fmt.Errorf("ptxas -v: no register count for %s", k)
		}
	}
	return out, nil
}

func atoi(s string) int {
	v, err := strconv.Atoi(s)
	if err != nil {
		panic(err) // the regexps match digits only
	}
	return v
}

// PTXInfo is what the report needs from a PTX module's text: its target and its entries with their .maxntid.
type PTXInfo struct {
	Target  int            // .target sm_NN → NN
	Entries []string       // in file order
	MaxNTID map[string]int // threads per block of __launch_bounds__ (x·y·z), when given
}

var (
	reTargetPTX = regexp.MustCompile(`(?m)^\.target\s+sm_(\d+)`)
	reEntry     = regexp.MustCompile(`(?m)^\.visible \.entry ([A-Za-z_][A-Za-z0-9_]*)\(`)
	reMaxNTID   = regexp.MustCompile(`(?m)^\.maxntid (\d+), (\d+), (\d+)`)
)

// ParsePTX reads a module's target, entries and launch bounds.
func ParsePTX(text string) (PTXInfo, error) {
	info := PTXInfo{MaxNTID: map[string]int{}}
	m := reTargetPTX.FindStringSubmatch(text)
	if m == nil {
		return info, fmt.Errorf("no .target sm_NN line")
	}
	info.Target = atoi(m[1])
	ents := reEntry.FindAllStringSubmatchIndex(text, -1)
	for i, e := range ents {
		name := text[e[2]:e[3]]
		info.Entries = append(info.Entries, name)
		end := len(text)
		if i+1 < len(ents) {
			end = ents[i+1][0]
		}
		// The directives sit between the parameter list and the body's '{'.
		seg := text[e[1]:end]
		if b := strings.Index(seg, "{"); b >= 0 {
			seg = seg[:b]
		}
		if n := reMaxNTID.FindStringSubmatch(seg); n != nil {
			info.MaxNTID[name] = atoi(n[1]) * atoi(n[2]) * atoi(n[3])
		}
	}
	if len(info.Entries) == 0 {
		return info, fmt.Errorf("no .visible .entry")
	}
	return info, nil
}
