package cuda

import (
	"fmt"
	"strconv"
	"strings"
)

// ptxParam is one parameter of a PTX kernel (".param .u64 name"): its size in bytes and whether it is a float.
type ptxParam struct {
	typ   string // ".u64", ".f32", ...
	size  int
	float bool
}

func (p ptxParam) String() string { return p.typ }

// ptxEntry is a kernel of a PTX module and its parameter list.
type ptxEntry struct {
	name   string
	params []ptxParam
}

// ptxEntries lists the kernels of a PTX module (".visible .entry NAME(" ... ")") with their parameters.
func ptxEntries(src string) ([]ptxEntry, error) {
	var entries []ptxEntry
	for {
		i := strings.Index(src, ".entry ")
		if i < 0 {
			return entries, nil
		}
		rest := src[i+len(".entry "):]
		open := strings.IndexByte(rest, '(')
		if open < 0 {
			return nil, fmt.Errorf("ptx: .entry without a parameter list")
		}
		name := strings.TrimSpace(rest[:open])
		end := strings.IndexByte(rest[open:], ')')
		if end < 0 {
			return nil, fmt.Errorf("ptx: the parameter list of %s has no )", name)
		}
		e := ptxEntry{name: name}
		for k, decl := range strings.Split(rest[open+1:open+end], ",") {
			if strings.TrimSpace(decl) == "" {
				continue
			}
			p, err := parsePTXParam(decl)
			if err != nil {
				return nil, fmt.Errorf("ptx: %s parameter %d: %w", name, k, err)
			}
			e.params = append(e.params, p)
		}
		entries = append(entries, e)
		src = rest[open+end:]
	}
}

// parsePTXParam reads ".param [.align N] .TYPE [.ptr ...] NAME[[COUNT]]".
func parsePTXParam(decl string) (ptxParam, error) {
	f := strings.Fields(decl)
	if len(f) < 2 || f[0] != ".param" {
		return ptxParam{}, fmt.Errorf("%q is not a .param declaration", strings.TrimSpace(decl))
	}
	f = f[1:]
	if f[0] == ".align" && len(f) > 2 {
		f = f[2:]
	}
	typ := f[0]
	bits, err := strconv.Atoi(strings.TrimLeft(typ, ".usbf"))
	if err != nil || len(typ) < 3 || !strings.ContainsRune("usbf", rune(typ[1])) || bits%8 != 0 || bits == 0 {
		return ptxParam{}, fmt.Errorf("unknown type %s", typ)
	}
	p := ptxParam{typ: typ, size: bits / 8, float: typ[1] == 'f'}
	name := f[len(f)-1]
	if i := strings.IndexByte(name, '['); i >= 0 && strings.HasSuffix(name, "]") {
		n, err := strconv.Atoi(name[i+1 : len(name)-1])
		if err != nil || n < 1 {
			return ptxParam{}, fmt.Errorf("bad array size in %s", name)
		}
		p.size *= n
		p.typ = fmt.Sprintf("%s[%d]", typ, n)
	}
	return p, nil
}

// checkArgs compares a launch's arguments with the kernel's PTX parameters: the same count, each of the same size,
// floats where the kernel takes floats.
func checkArgs(params []ptxParam, args []Arg) error {
	if len(args) != len(params) {
		return fmt.Errorf("the kernel takes %d argument(s) %v, the launch passes %d %v", len(params), params, len(args), args)
	}
	for i, a := range args {
		if a.Size() != params[i].size || (a.Kind() == 'f') != params[i].float {
			return fmt.Errorf("argument %d is %v, the kernel's parameter is %s", i, a, params[i].typ)
		}
	}
	return nil
}
