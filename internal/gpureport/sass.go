package gpureport

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Inst is one SASS instruction as `nvdisasm -c` or `cuobjdump -sass` prints it: "/*0a30*/  @!P0 BRA 0x3180 ;"
// (cuobjdump) or "/*0a30*/  @!P0 BRA `(.L_x_3) ;" (nvdisasm, whose targets are labels).
type Inst struct {
	Addr   int    // byte offset in the function
	Pred   string // guard predicate ("@!P0"), "" when unguarded
	Op     string // opcode with its modifiers ("HMMA.1684.F32.TF32")
	Args   string // operands as printed
	Target int    // branch target for BRA/BRX/JMP/CALL with an address or label operand, else −1
	label  string // the target label, until resolved
}

// Base is the opcode without modifiers ("HMMA").
func (in Inst) Base() string {
	if i := strings.IndexByte(in.Op, '.'); i >= 0 {
		return in.Op[:i]
	}
	return in.Op
}

// Function is one kernel's SASS.
type Function struct {
	Name  string
	Insts []Inst
}

var (
	reFunc    = regexp.MustCompile(`^\s*Function : (\S+)`)         // cuobjdump
	reSection = regexp.MustCompile(`^\.text\.([A-Za-z_]\w*):\s*$`) // nvdisasm
	reLabel   = regexp.MustCompile(`^\s*([.$][\w.$@]*):\s*$`)
	// The instruction up to its ';' (cuobjdump's encoding comment after it is ignored).
	reInst    = regexp.MustCompile(`^\s*/\*([0-9a-f]+)\*/\s+(.*?)\s*;`)
	reTarget  = regexp.MustCompile(`(?:^|[\s,])(0x[0-9a-f]+)\s*$`)
	reTargetL = regexp.MustCompile("`\\(([^)]+)\\)\\s*$")
)

// ParseSASS reads the disassembly of one cubin (`nvdisasm -c` or `cuobjdump -sass`): its functions in the order
// printed, branch targets resolved to addresses.
func ParseSASS(text string) ([]Function, error) {
	var fns []Function
	var labels map[string]int
	var pending []string
	finish := func() error {
		if len(fns) == 0 {
			return nil
		}
		f := &fns[len(fns)-1]
		for i := range f.Insts {
			in := &f.Insts[i]
			if in.label == "" {
				continue
			}
			a, ok := labels[in.label]
			if !ok {
				return fmt.Errorf("%s: branch at %#x to unknown label %s", f.Name, in.Addr, in.label)
			}
			in.Target, in.label = a, ""
		}
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		s := sc.Text()
		m := reFunc.FindStringSubmatch(s)
		if m == nil {
			m = reSection.FindStringSubmatch(s)
		}
		if m != nil {
			if err := finish(); err != nil {
				return nil, err
			}
			fns = append(fns, Function{Name: m[1]})
			labels, pending = map[string]int{}, nil
			continue
		}
		if m := reLabel.FindStringSubmatch(s); m != nil && len(fns) > 0 {
			pending = append(pending, m[1])
			continue
		}
		m = reInst.FindStringSubmatch(s)
		if m == nil || len(fns) == 0 {
			continue
		}
		addr, err := strconv.ParseInt(m[1], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("sass line %d: address %q: %v", line, m[1], err)
		}
		in, err := parseInst(int(addr), m[2])
		if err != nil {
			return nil, fmt.Errorf("sass line %d: %v", line, err)
		}
		for _, l := range pending {
			labels[l] = in.Addr
		}
		pending = pending[:0]
		f := &fns[len(fns)-1]
		f.Insts = append(f.Insts, in)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return fns, nil
}

func parseInst(addr int, body string) (Inst, error) {
	in := Inst{Addr: addr, Target: -1}
	f := strings.Fields(body)
	if len(f) == 0 {
		return in, fmt.Errorf("empty instruction at %#x", addr)
	}
	if strings.HasPrefix(f[0], "@") {
		in.Pred, f = f[0], f[1:]
		if len(f) == 0 {
			return in, fmt.Errorf("predicate without an instruction at %#x", addr)
		}
	}
	in.Op = f[0]
	in.Args = strings.Join(f[1:], " ")
	switch in.Base() {
	case "BRA", "BRX", "JMP", "JMX", "CALL":
		if m := reTargetL.FindStringSubmatch(in.Args); m != nil {
			in.label = m[1]
		} else if m := reTarget.FindStringSubmatch(in.Args); m != nil {
			t, err := strconv.ParseInt(m[1][2:], 16, 64)
			if err != nil {
				return in, fmt.Errorf("branch target %q at %#x: %v", m[1], addr, err)
			}
			in.Target = int(t)
		}
	}
	return in, nil
}

// Loop is the address range [Start, End] of a backward branch at End to Start (the loop's body, in address order).
type Loop struct{ Start, End int }

func (l Loop) contains(o Loop) bool { return l.Start <= o.Start && o.End <= l.End && l != o }

// Loops are the function's backward branches as address ranges, a branch to itself (the trap loop that ends every
// function after its last EXIT) excepted.
func (f Function) Loops() []Loop {
	var ls []Loop
	for _, in := range f.Insts {
		if in.Target >= 0 && in.Target < in.Addr && (in.Base() == "BRA" || in.Base() == "JMP") {
			ls = append(ls, Loop{in.Target, in.Addr})
		}
	}
	return ls
}

// Range returns the instructions with addresses in [l.Start, l.End].
func (f Function) Range(l Loop) []Inst {
	var out []Inst
	for _, in := range f.Insts {
		if in.Addr >= l.Start && in.Addr <= l.End {
			out = append(out, in)
		}
	}
	return out
}

// MainLoop picks the loop whose instruction mix the report gives. The heuristic: of the innermost loops (backward
// branch ranges that contain no other loop with an MMA or FFMA in it), the one with the most tensor-core MMAs, then
// the most FFMAs, then the most instructions. A math-free loop nested in a k-loop (a walk over kernel taps, say) does
// not hide the k-loop; its body is counted once, as the k-loop's other code. In a tiled GEMM the k-loop is innermost
// (its inner k-steps are unrolled) and holds every MMA or FFMA, while the epilogue's store loops hold none; in a grid-stride kernel the unrolled body beats the remainder loop. A
// function without a loop is counted whole (ok false), its padding NOPs after the last EXIT excepted.
//
// The count is static: each instruction in the range once, both sides of its forward branches included. The main
// loops here branch forward only around bounds checks and the last tile's prefetch, whose bodies run on nearly every
// iteration, so the static mix is the issued mix of a steady-state iteration.
func (f Function) MainLoop() (l Loop, body []Inst, ok bool) {
	loops := f.Loops()
	var best []Inst
	var bestLoop Loop
	var bestScore [3]int
	math := make([]bool, len(loops))
	for i, c := range loops {
		m := Classify(f.Range(c))
		math[i] = m.Count[CatMMA]+m.Count[CatFFMA] > 0
	}
	for _, c := range loops {
		inner := true
		for i, o := range loops {
			if math[i] && c.contains(o) {
				inner = false
				break
			}
		}
		if !inner {
			continue
		}
		b := f.Range(c)
		m := Classify(b)
		score := [3]int{m.Count[CatMMA], m.Count[CatFFMA], m.Total}
		if best == nil || less(bestScore, score) {
			best, bestLoop, bestScore = b, c, score
		}
	}
	if best != nil {
		return bestLoop, best, true
	}
	last := -1
	for i, in := range f.Insts {
		if in.Base() == "EXIT" {
			last = i
		}
	}
	body = f.Insts
	if last >= 0 {
		body = f.Insts[:last+1]
	}
	if len(body) == 0 {
		return Loop{}, nil, false
	}
	return Loop{body[0].Addr, body[len(body)-1].Addr}, body, false
}

func less(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// Cat is an instruction class of the mix.
type Cat int

const (
	CatMMA   Cat = iota // tensor-core MMA: HMMA, IMMA, DMMA, BMMA, and the sm_90 warpgroup GMMAs
	CatFFMA             // FP32 fused multiply-add
	CatFP               // other floating point: FADD, FMUL, MUFU, compares, conversions between float types
	CatInt              // integer and address arithmetic, moves, predicates, constants, special registers, I2F/F2I
	CatLDS              // shared-memory loads (LDS, LDSM)
	CatSTS              // shared-memory stores and atomics
	CatLDG              // global loads (LDG, LD, LDGSTS, texture)
	CatSTG              // global stores, reductions and atomics
	CatLocal            // local memory (LDL, STL): spills and local arrays
	CatBar              // barriers and memory fences (BAR, MEMBAR, DEPBAR)
	CatCtl              // control: branches, convergence (BSSY/BSYNC), EXIT, NOP
	CatOther            // anything else (SHFL, VOTE…)
	numCats
)

var catNames = [numCats]string{"MMA", "FFMA", "FP other", "int/addr", "LDS", "STS", "LDG", "STG", "local", "BAR", "ctl", "other"}

func (c Cat) String() string { return catNames[c] }

var catOf = map[string]Cat{}

func init() {
	for cat, ops := range map[Cat]string{
		CatMMA:   "HMMA IMMA DMMA BMMA HGMMA IGMMA BGMMA QGMMA",
		CatFFMA:  "FFMA FFMA32I",
		CatFP:    "FADD FADD32I FMUL FMUL32I FMNMX FSETP FSEL FSET FCHK MUFU DADD DMUL DFMA DSETP DMNMX HADD2 HADD2_32I HMUL2 HMUL2_32I HFMA2 HFMA2_32I HSETP2 HSET2 HMNMX2 FRND F2F F2FP FSWZADD",
		CatInt:   "IMAD IMAD32I IADD3 IADD IADD32I IMUL IMUL32I LEA LOP3 LOP LOP32I SHF SHL SHR ISETP ICMP IABS IMNMX SEL MOV MOV32I PRMT POPC FLO BREV BMSK SGXT IDP I2F I2FP F2I F2IP I2I LDC S2R S2UR CS2R R2UR P2R R2P PLOP3 PSETP LEPC ULDC UIADD3 UIMAD UMOV ULOP3 USHF ULEA USEL UISETP UPRMT UFLO UPOPC UBREV UPLOP3 USGXT UBMSK ULOP UP2UR UR2UP VOTEU",
		CatLDS:   "LDS LDSM",
		CatSTS:   "STS ATOMS",
		CatLDG:   "LDG LD LDGSTS TLD TEX TLD4 TXQ LDGDEPBAR",
		CatSTG:   "STG ST RED ATOM ATOMG",
		CatLocal: "LDL STL",
		CatBar:   "BAR MEMBAR DEPBAR ERRBAR ARRIVES SYNCS CCTL",
		CatCtl:   "BRA BRX JMP JMX CALL RET EXIT BSSY BSYNC BREAK BPT YIELD NOP KILL WARPSYNC NANOSLEEP BMOV",
	} {
		for _, op := range strings.Fields(ops) {
			catOf[op] = cat
		}
	}
}

// CategoryOf classes one instruction. HFMA2.MMA is a move idiom (ptxas zeroes or copies registers with it on the
// MMA pipe's half-precision unit), counted as CatInt.
func CategoryOf(in Inst) Cat {
	if strings.HasPrefix(in.Op, "HFMA2.MMA") {
		return CatInt
	}
	if c, ok := catOf[in.Base()]; ok {
		return c
	}
	return CatOther
}

// Mix is an instruction count by class, and the MMA opcodes found.
type Mix struct {
	Total int
	Count [numCats]int
	MMAOp map[string]int // opcode with modifiers → count, for the MMA class
}

// Classify counts insts by class.
func Classify(insts []Inst) Mix {
	m := Mix{MMAOp: map[string]int{}}
	for _, in := range insts {
		c := CategoryOf(in)
		m.Count[c]++
		m.Total++
		if c == CatMMA {
			m.MMAOp[in.Op]++
		}
	}
	return m
}

// Share is the fraction of the instructions in class c (0 for an empty mix).
func (m Mix) Share(c Cat) float64 {
	if m.Total == 0 {
		return 0
	}
	return float64(m.Count[c]) / float64(m.Total)
}
