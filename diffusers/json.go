package diffusers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// object is a decoded JSON object whose numbers are kept as json.Number, with the file it came from for errors.
type object struct {
	file string
	m    map[string]any
	used map[string]bool
}

// decodeObject parses one JSON object (numbers kept exact) and nothing after it.
func decodeObject(file string, data []byte) (*object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object: %w", file, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%s: not a JSON object (null)", file)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: data after the JSON object", file)
	}
	return &object{file: file, m: m, used: map[string]bool{}}, nil
}

// refuse is the error of a key whose value this reader does not support.
func (o *object) refuse(key string, v any, supported string) error {
	return fmt.Errorf("%s: %s = %s is not supported (supported: %s)", o.file, key, show(v), supported)
}

// show renders a JSON value as it appears in the file.
func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

// get returns the value of key, or def when the file does not set it (diffusers fills missing arguments with the
// defaults of __init__, so this reader does the same).
func (o *object) get(key string, def any) any {
	o.used[key] = true
	if v, ok := o.m[key]; ok {
		return v
	}
	return def
}

// str reads a string key whose value must be one of allowed.
func (o *object) str(key, def string, allowed ...string) (string, error) {
	v := o.get(key, def)
	s, ok := v.(string)
	if !ok || (len(allowed) > 0 && !contains(allowed, s)) {
		return "", o.refuse(key, v, quoteAll(allowed))
	}
	return s, nil
}

// boolean reads a true/false key.
func (o *object) boolean(key string, def bool) (bool, error) {
	v := o.get(key, def)
	b, ok := v.(bool)
	if !ok {
		return false, o.refuse(key, v, "true or false")
	}
	return b, nil
}

// asInt converts a JSON number holding an integer (1 or 1.0) to int.
func asInt(v any) (int, bool) {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil && i >= math.MinInt32 && i <= math.MaxInt32 {
			return int(i), true
		}
		if f, err := n.Float64(); err == nil && f == math.Trunc(f) && math.Abs(f) <= math.MaxInt32 {
			return int(f), true
		}
	case int:
		return n, true
	}
	return 0, false
}

// asFloat converts a finite JSON number to float64.
func asFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
	case int:
		return float64(n), true
	case float64:
		return n, !math.IsInf(n, 0) && !math.IsNaN(n)
	}
	return 0, false
}

// integer reads an integer key that must satisfy ok (described by want).
func (o *object) integer(key string, def any, want string, ok func(int) bool) (int, error) {
	v := o.get(key, def)
	i, isInt := asInt(v)
	if !isInt || !ok(i) {
		return 0, o.refuse(key, v, want)
	}
	return i, nil
}

// number reads a finite number key that must satisfy ok (described by want).
func (o *object) number(key string, def any, want string, ok func(float64) bool) (float64, error) {
	v := o.get(key, def)
	f, isNum := asFloat(v)
	if !isNum || !ok(f) {
		return 0, o.refuse(key, v, want)
	}
	return f, nil
}

// null reads a key that must be null (an option this reader does not implement).
func (o *object) null(key, what string) error {
	if v := o.get(key, nil); v != nil {
		return o.refuse(key, v, "null ("+what+")")
	}
	return nil
}

// unknown refuses keys this reader does not know; keys starting with '_' (_class_name, _diffusers_version,
// _name_or_path, …) are diffusers' bookkeeping and are read where they matter.
func (o *object) unknown(known string) error {
	var extra []string
	for k := range o.m {
		if !o.used[k] && !strings.HasPrefix(k, "_") {
			extra = append(extra, k)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	sort.Strings(extra)
	return fmt.Errorf("%s: unknown key %q (this reader knows %s; a key it does not know may change the model, so it is refused)",
		o.file, extra[0], known)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func quoteAll(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// encode writes a config as diffusers' ConfigMixin.save_config does: keys sorted, two-space indent, a final newline.
func encode(m map[string]any) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// pyFloat writes a float as Python's json module does (repr: 1e-05, 0.02, 1.0), for the keys diffusers declares
// float, so that the files read like those save_pretrained writes.
func pyFloat(f float64) json.Number {
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") {
		s += ".0"
	}
	return json.Number(s)
}

// jsonInt and jsonFloat are defaults as the decoder would have produced them.
func jsonInt(i int) json.Number       { return json.Number(strconv.Itoa(i)) }
func jsonFloat(f float64) json.Number { return json.Number(strconv.FormatFloat(f, 'g', -1, 64)) }
