package model

// For the external tests of package model_test (which may import package diffusers, itself an importer of model).
var (
	CheckTorchParity = checkTorchParity
	ParityConfig     = parityConfig
)
