package lab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killTimeout bounds how long removing a namespace waits for its processes
// to die.
const killTimeout = 10 * time.Second

// Sweep removes the namespaces left by earlier runs whose owning process is
// gone (a test binary that was killed, or that never called Close): it
// SIGKILLs what still runs inside them and deletes them. Namespaces of live
// processes, including this one, and namespaces whose names do not follow
// this package's scheme are never touched. New calls Sweep first.
//
// Owners are looked up in this process's /proc, so labs of processes in
// another PID namespace that shares /run/netns would look dead: do not share
// /run/netns across PID namespaces.
func Sweep(logger *slog.Logger) error {
	log := orDiscard(logger)
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("lab: sweep: %w", err)
	}
	var errs []error
	for _, e := range entries {
		o, ok := parseNSName(e.Name())
		if !ok || o.alive() {
			continue
		}
		log.Info("lab: sweep: removing namespace of a dead process", "netns", e.Name(), "pid", o.pid)
		if err := removeNS(context.Background(), log, e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: sweep: %w", err)
	}
	return nil
}

// removeNS kills every process inside namespace ns and deletes it. A
// namespace that is already gone (someone else swept it) is not an error.
func removeNS(ctx context.Context, log *slog.Logger, ns string) error {
	killErr := killNS(ctx, log, ns)
	if _, err := run(ctx, log, "", "ip", "netns", "delete", ns); err != nil && nsExists(ns) {
		return errors.Join(killErr, fmt.Errorf("delete namespace %s: %w", ns, err))
	}
	return killErr
}

// nsExists reports whether a named namespace is still listed.
func nsExists(ns string) bool {
	_, err := os.Lstat(filepath.Join(netnsDir, ns))
	return err == nil
}

// killNS SIGKILLs every process whose network namespace is ns, until none is
// left. Zombies do not count (the kernel no longer shows their namespace),
// and neither does this process, whose main thread may be inside ns for a
// moment during Host.Do.
func killNS(ctx context.Context, log *slog.Logger, ns string) error {
	deadline := time.Now().Add(killTimeout)
	self := os.Getpid()
	for {
		out, err := run(ctx, log, "", "ip", "netns", "pids", ns)
		if err != nil {
			if !nsExists(ns) {
				return nil
			}
			return fmt.Errorf("list processes in %s: %w", ns, err)
		}
		var pids []int
		for _, f := range strings.Fields(out) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid == self || pid <= 1 {
				continue
			}
			pids = append(pids, pid)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v in %s survive SIGKILL", pids, ns)
		}
		for _, pid := range pids {
			log.Debug("lab: killing process left in namespace", "netns", ns, "pid", pid)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill process %d in %s: %w", pid, ns, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kill processes in %s: %w", ns, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// orDiscard returns logger, or a logger that drops everything if it is nil.
func orDiscard(logger *slog.Logger) *slog.Logger {
	if logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return logger
}
