// Package prof lets shoal's commands write a CPU profile when the
// environment asks for one (SHOAL_CPUPROFILE=path), for performance work.
package prof

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// StartFromEnv starts a CPU profile to $SHOAL_CPUPROFILE (with the process
// ID appended when it ends in "."), and returns the function that stops it.
func StartFromEnv() func() {
	path := os.Getenv("SHOAL_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	if path[len(path)-1] == '.' {
		path = fmt.Sprintf("%s%d", path, os.Getpid())
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "cpu profile:", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
