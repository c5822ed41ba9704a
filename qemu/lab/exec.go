package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// cmdTimeout bounds every ip, nft or tc call, so that a wedged tool cannot
// hang a test forever.
const cmdTimeout = 30 * time.Second

// waitDelay is how long Wait waits for a killed command's I/O to drain.
const waitDelay = 5 * time.Second

// run runs one administrative command (ip, nft, tc) with stdin as its input
// and returns its standard output. The error names the command line and
// carries its standard error.
func run(ctx context.Context, log *slog.Logger, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = waitDelay
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	line := cmdLine(name, args)
	log.Debug("lab: run", "cmd", line)
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if stdin != "" {
			msg += "\ninput:\n" + stdin
		}
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return stdout.String(), fmt.Errorf("%s: %w: %s", line, err, msg)
	}
	return stdout.String(), nil
}

// nsCommand returns a command that runs name inside namespace ns through
// `ip netns exec`. ip execs the command itself, so the process's PID is the
// command's; cancelling ctx SIGKILLs it.
func nsCommand(ctx context.Context, ns, name string, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", ns, name}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	return cmd
}

// runIn runs a command inside namespace ns and returns its combined output;
// the error includes the output.
func runIn(ctx context.Context, ns, name string, args ...string) (string, error) {
	cmd := nsCommand(ctx, ns, name, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", cmdLine(cmd.Args[0], cmd.Args[1:]), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func cmdLine(name string, args []string) string {
	return strings.Join(append([]string{name}, args...), " ")
}
