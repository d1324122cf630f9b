// Package atomicfile writes files that a crash, a signal or a full disk never leaves half written: every output of
// the trainer and the samplers (checkpoints, sample grids, plots, configs, exports) goes through Write.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Fault, when set (tests only), wraps the writer of every Write with the path being written: the way tests make a
// checkpoint, sample grid or plot write fail as on a full disk.
var Fault func(path string, w io.Writer) io.Writer

// TmpMarker is in the name of every temporary file Write makes ("." + base + TmpMarker + random); RemoveStale
// deletes such names.
const TmpMarker = ".tmp-"

// Write makes path hold exactly what write produces, or leaves it as it was: the data goes to a temporary file in
// the same directory, which is fsynced, closed and renamed over path, and then the directory is fsynced so that the
// rename itself survives a crash. On any error the temporary file is removed, so no partial file is ever visible
// under path (or under any name a reader would look for: temporaries start with '.').
func Write(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+TmpMarker+"*")
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
	if Fault != nil {
		w = Fault(path, w)
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
	return SyncDir(dir)
}

// WriteBytes is Write of a byte slice.
func WriteBytes(path string, b []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// SyncDir fsyncs a directory, making renames and links in it durable.
func SyncDir(dir string) error {
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

// TempName is a temporary name for base in dir that RemoveStale recognises (for files made by other means than
// Write, such as a hard link about to be renamed).
func TempName(dir, base, tag string) string { return filepath.Join(dir, "."+base+TmpMarker+tag) }

// RemoveStale deletes the temporary files and folders that a process killed in the middle of a write (SIGKILL, a
// power cut) left in dir, so that repeated crashes do not fill the disk, and returns what it removed and what it
// could not. Only regular files and folders (WriteDir's) whose names start with '.' and hold TmpMarker are touched.
func RemoveStale(dir string) (removed []string, errs []error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil
	}
	for _, e := range ents {
		name := e.Name()
		if !(e.Type().IsRegular() || e.IsDir()) || !strings.HasPrefix(name, ".") || !strings.Contains(name, TmpMarker) {
			continue
		}
		p := filepath.Join(dir, name)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, p)
	}
	return removed, errs
}

// WriteDir makes the folder path hold exactly what fill writes into the folder it is given, or leaves it as it was.
// fill builds the new folder under a temporary name next to path (every file it writes should go through Write, so
// that each is fsynced); the folder is fsynced and then swapped for path in one step (renameat2 RENAME_EXCHANGE on
// Linux), the old contents deleted, and the parent fsynced. A reader sees the old folder or the new one, never a mix.
// Where the exchange is not available, the old folder is first renamed aside and the new one renamed in: for that
// instant path does not exist, but it is never partly written. A crash leaves at most a temporary folder, which
// RemoveStale deletes. On error the temporary folder is removed and path is as it was.
func WriteDir(path string, fill func(dir string) error) (err error) {
	parent, base := filepath.Dir(path), filepath.Base(path)
	tmp, err := os.MkdirTemp(parent, "."+base+TmpMarker+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err = os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = fill(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = syncTree(tmp); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, serr := os.Lstat(path); serr != nil {
		if err = os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write %s: rename: %w", path, err)
		}
		return SyncDir(parent)
	}
	if exchange(tmp, path) == nil { // tmp now holds the old folder
		if err := SyncDir(parent); err != nil {
			return err
		}
		if err := os.RemoveAll(tmp); err != nil {
			return fmt.Errorf("write %s: removing the old folder: %w", path, err)
		}
		return nil
	}
	old := filepath.Join(parent, "."+base+TmpMarker+"old-"+filepath.Base(tmp))
	if err = os.Rename(path, old); err != nil {
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		os.Rename(old, path)
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	if err := SyncDir(parent); err != nil {
		return err
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("write %s: removing the old folder: %w", path, err)
	}
	return nil
}

// syncTree fsyncs every folder under dir, dir last (the files were fsynced when written).
func syncTree(dir string) error {
	var dirs []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := SyncDir(dirs[i]); err != nil {
			return err
		}
	}
	return nil
}
