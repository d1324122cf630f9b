//go:build linux && (amd64 || arm64)

package atomicfile

import (
	"errors"
	"runtime"
	"syscall"
	"unsafe"
)

// sysRenameat2 is the renameat2 system call number (Go's syscall package names it on arm64 only).
var sysRenameat2 = map[string]uintptr{"amd64": 316, "arm64": 276}

// exchange swaps the names a and b atomically: renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE).
func exchange(a, b string) error {
	const atFDCWD, renameExchange = -100, 2
	nr, ok := sysRenameat2[runtime.GOARCH]
	if !ok {
		return errors.ErrUnsupported
	}
	pa, err := syscall.BytePtrFromString(a)
	if err != nil {
		return err
	}
	pb, err := syscall.BytePtrFromString(b)
	if err != nil {
		return err
	}
	fd := atFDCWD
	_, _, e := syscall.Syscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(pa)), uintptr(fd), uintptr(unsafe.Pointer(pb)), renameExchange, 0)
	if e != 0 {
		return e
	}
	return nil
}
