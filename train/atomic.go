package train

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// writeFault, when set (tests only), wraps the writer of every atomic write with the path being written: the way
// the tests make a checkpoint, sample grid or plot write fail as on a full disk.
var writeFault func(path string, w io.Writer) io.Writer

// WriteAtomic makes path hold exactly what write produces, or leaves it as it was; see writeAtomic. bin/sample
// writes its outputs through it, so that neither a signal nor a full disk leaves a partial image.
func WriteAtomic(path string, write func(io.Writer) error) error { return writeAtomic(path, write) }

// writeAtomic makes path hold exactly what write produces, or leaves it as it was: the data goes to a temporary
// file in the same directory, which is fsynced, closed and renamed over path, and then the directory is fsynced so
// that the rename itself survives a crash. On any error the temporary file is removed, so no partial file is ever
// visible under path (or under any name a reader would look for: temporaries start with '.').
func writeAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+tmpMarker+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	var w io.Writer = f
	if writeFault != nil {
		w = writeFault(path, w)
	}
	if err = write(w); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if err = os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory, making renames and links in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic is writeAtomic of a byte slice.
func writeFileAtomic(path string, b []byte) error {
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// tmpMarker is in the name of every temporary file writeAtomic makes ("." + base + tmpMarker + random).
const tmpMarker = ".tmp-"

// removeStaleTemps deletes the temporary files that a process killed in the middle of writeAtomic (SIGKILL, a power
// cut) left in dirs, and a leftover temporary link of linkLatest, so that repeated crashes do not fill the disk.
// Only names this package makes are touched: a leading '.' and the temporary marker. Errors are logged, not fatal.
func removeStaleTemps(log *zap.Logger, dirs ...string) {
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			name := e.Name()
			if !e.Type().IsRegular() || !strings.HasPrefix(name, ".") ||
				!(strings.Contains(name, tmpMarker) || name == "."+LatestName+".link") {
				continue
			}
			p := filepath.Join(dir, name)
			if err := os.Remove(p); err != nil {
				log.Warn("could not remove a stale temporary file", zap.String("path", p), zap.Error(err))
				continue
			}
			log.Info("removed a temporary file left by an interrupted write", zap.String("path", p))
		}
	}
}
