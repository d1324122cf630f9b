//go:build !(linux && (amd64 || arm64))

package atomicfile

import "errors"

// exchange is not available here: WriteDir renames the old folder aside instead.
func exchange(a, b string) error { return errors.ErrUnsupported }
