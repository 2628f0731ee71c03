//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDataFile takes an exclusive lock on path+".lock", held until the
// returned function releases it (or the process ends, when the kernel
// releases it): a second memsync on the same data file would load it,
// then save its own state over the first one's.
func lockDataFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data file lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data file %s is in use by another memsync (it holds %s.lock): stop it, or pass another --data-file", path, path)
		}
		return nil, fmt.Errorf("data file lock: %w", err)
	}
	return func() { f.Close() }, nil
}
