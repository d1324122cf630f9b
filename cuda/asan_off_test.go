//go:build !asan && !cuda

package cuda

import "testing"

const asanBuild = false

func expectASanAbort(t *testing.T, which string) {
	t.Fatalf("expectASanAbort(%s) outside an -asan build", which)
}
