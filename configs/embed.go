// Package configs embeds the shipped configuration files, so that bin/train runs the
// default (fashion32.toml) with no file at hand.
package configs

import "embed"

// Files holds every *.toml of this folder.
//
//go:embed *.toml
var Files embed.FS

// Default is the name of the embedded default configuration.
const Default = "fashion32.toml"
