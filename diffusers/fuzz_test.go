package diffusers

import (
	"os"
	"reflect"
	"testing"

	"github.com/ddpmgo/ddpm/config"
)

// FuzzParseUNet: the config.json reader never panics, and what it accepts encodes back to a file it reads as the
// same model (so an accepted file always describes a model this trainer builds and exports).
func FuzzParseUNet(f *testing.F) {
	for _, tc := range testModels() {
		b, err := EncodeUNet(tc.m, tc.in, tc.size)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if b, err := os.ReadFile("testdata/ddpm-cifar10-32.config.json"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{`{}`, `{"sample_size": 64}`, `{"sample_size": [8, 8], "block_out_channels": [8], "down_block_types": ["AttnDownBlock2D"], "up_block_types": ["UpBlock2D"], "norm_num_groups": 4}`,
		`{"sample_size": 32, "freq_shift": 1e308}`, `{"sample_size": 32, "freq_shift": -1e300}`, `{"sample_size": 32, "attention_head_dim": null, "layers_per_block": 2147483648}`, `[]`, `{"sample_size": 1.5}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		u, err := ParseUNet("config.json", data)
		if err != nil {
			return
		}
		b, err := EncodeUNet(u.Model, u.InChannels, u.SampleSize)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", data, err)
		}
		v, err := ParseUNet("config.json", b)
		if err != nil {
			t.Fatalf("re-encoded config refused: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(u, v) {
			t.Fatalf("re-encoded config differs:\n%+v\n%+v", u, v)
		}
	})
}

// FuzzParseScheduler: the scheduler_config.json reader never panics, and what it accepts round-trips.
func FuzzParseScheduler(f *testing.F) {
	d := config.Default()
	for _, v := range []string{"beta", "posterior"} {
		b, err := EncodeScheduler(d.Diffusion, config.Sample{Variance: v, Clip: v == "beta"})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{`{}`, `{"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 4000}`, `{"beta_end": 2}`, `{"trained_betas": null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseScheduler("scheduler_config.json", data)
		if err != nil {
			return
		}
		b, err := EncodeScheduler(s.Diffusion, config.Sample{Variance: s.Variance, Clip: s.Clip})
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", data, err)
		}
		r, err := ParseScheduler("scheduler_config.json", b)
		if err != nil || r != s {
			t.Fatalf("re-encoded scheduler: %+v, %v; want %+v", r, err, s)
		}
	})
}
