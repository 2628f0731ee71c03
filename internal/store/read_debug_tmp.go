package store

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
)

var dbgSingles, dbgBatches, dbgBatched atomic.Int64

func init() {
	if os.Getenv("DEBUG_READS_TMP") == "" {
		return
	}
	f, _ := os.OpenFile(os.Getenv("DEBUG_READS_TMP"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	go func() {
		for range time.Tick(2 * time.Second) {
			s, b, n := dbgSingles.Swap(0), dbgBatches.Swap(0), dbgBatched.Swap(0)
			avg := 0.0
			if b > 0 {
				avg = float64(n) / float64(b)
			}
			fmt.Fprintf(f, "reads: singles %d batches %d avg %.1f\n", s, b, avg)
		}
	}()
}
