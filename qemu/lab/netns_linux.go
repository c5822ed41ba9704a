package lab

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// doInNS runs fn on a fresh goroutine locked to its OS thread, with that
// thread switched into the named network namespace, and switches it back
// afterwards. If switching back fails the thread stays locked, so the Go
// runtime destroys it when the goroutine ends and no other goroutine ever
// runs in the wrong namespace. A panic in fn is re-raised in the caller.
func doInNS(ns string, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
		returned bool
	}
	done := make(chan result, 1)
	go func() {
		var res result
		defer func() { done <- res }()
		runtime.LockOSThread()
		unlock := true
		defer func() {
			if unlock {
				runtime.UnlockOSThread()
			}
		}()

		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			res.err = fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		path := filepath.Join(netnsDir, ns)
		target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			res.err = fmt.Errorf("open namespace %s: %w", path, err)
			return
		}
		err = unix.Setns(target, unix.CLONE_NEWNET)
		unix.Close(target)
		if err != nil {
			res.err = fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		defer func() {
			if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
				unlock = false // let the runtime destroy this thread
				res.err = errors.Join(res.err, fmt.Errorf("leave namespace %s: %w", ns, err))
			}
		}()
		defer func() {
			if !res.returned {
				if v := recover(); v != nil {
					res.panicked, res.value = true, v
				}
			}
		}()
		res.err = fn()
		res.returned = true
	}()
	res := <-done
	if res.panicked {
		panic(res.value)
	}
	if !res.returned && res.err == nil {
		return fmt.Errorf("function run in namespace %s exited without returning (runtime.Goexit, t.FailNow?)", ns)
	}
	return res.err
}
