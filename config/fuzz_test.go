package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary TOML to the strict decoder: it must return a config or an
// error, never panic, and whatever it accepts must validate and print back to a file
// that loads to the same configuration.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(configsDir, "*.toml"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("[train]\nbatch_size = -1\n"))
	f.Add([]byte("[model]\nblock_channels = [\"a\"]\n"))
	f.Add([]byte("[[train]]\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse("fuzz.toml", src, nil)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
		back, err := Parse("fuzz.toml", []byte(c.TOML()), nil)
		if err != nil {
			t.Fatalf("printed config does not reload: %v\n%s", err, c.TOML())
		}
		if back.TOML() != c.TOML() {
			t.Fatalf("round trip changed the config:\n%s\n---\n%s", c.TOML(), back.TOML())
		}
	})
}
