package model_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/model"
)

var updateConfigs = flag.Bool("update-configs", false, "rewrite testdata/*.config.json from diffusers.EncodeUNet (then run scripts/torch_parity.py)")

// optionBase is the small model the option fixtures start from: two levels of 4 and 8 channels, one resnet per
// down block, attention in the middle block only (heads of 4), 2 groups, 8×8 RGB images.
func optionBase() config.Model {
	return config.Model{BlockChannels: []int{4, 8}, LayersPerBlock: 1, MidAttention: true,
		AttentionResolutions: []int{}, DownAttentionResolutions: []int{}, UpAttentionResolutions: []int{},
		AttentionHeadDim: 4, NormGroups: 2, NormEps: 1e-5, FlipSinToCos: true, DownsamplePadding: 1}
}

// TestTorchParityFromConfig builds the U-Net from a diffusers config.json alone (diffusers.ParseUNet) and compares
// it with PyTorch: output, loss and every parameter gradient (model.CheckTorchParity, the tolerances of
// TestTorchParity), where scripts/torch_parity.py built its PyTorch model from the same file. Each file is what the
// exporter writes for the case's config (diffusers.EncodeUNet; the test fails when they drift apart: rewrite them
// with -update-configs, then regenerate the fixtures). unet_parity is TestTorchParity's model through its exported
// config; the others each change one option a config.json can set.
func TestTorchParityFromConfig(t *testing.T) {
	parity, _, _ := model.ParityConfig()
	parity.AttentionResolutions = []int{4}
	parity.DownAttentionResolutions, parity.UpAttentionResolutions = []int{}, []int{}
	with := func(f func(*config.Model)) config.Model {
		m := optionBase()
		f(&m)
		return m
	}
	for _, tc := range []struct {
		name string
		m    config.Model
	}{
		{"unet_parity", parity},
		{"opt_freq_shift", with(func(m *config.Model) { m.FreqShift = 1 })},
		{"opt_sin_first", with(func(m *config.Model) { m.FlipSinToCos = false })},
		{"opt_downsample_padding0", with(func(m *config.Model) { m.DownsamplePadding = 0 })},
		{"opt_attention_down_up", with(func(m *config.Model) {
			m.DownAttentionResolutions, m.UpAttentionResolutions = []int{8}, []int{4}
			m.AttentionHeadDim = 0 // null: one head per block
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const in, size = 3, 8
			want, err := diffusers.EncodeUNet(tc.m, in, size)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".config.json")
			if *updateConfigs {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s is not what diffusers.EncodeUNet writes for the case (run with -update-configs, then scripts/torch_parity.py):\n%s\nwant\n%s", path, got, want)
			}
			u, err := diffusers.ParseUNet(path, got)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(u.Model, tc.m) || u.InChannels != in || u.SampleSize != size {
				t.Fatalf("%s reads as %+v, the case is %+v", path, u.Model, tc.m)
			}
			model.CheckTorchParity(t, filepath.Join("testdata", tc.name+".bin"), u.Model, u.InChannels, u.SampleSize)
		})
	}
}
