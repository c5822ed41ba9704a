package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deadPID returns the PID of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Skipf("PID %d of a finished process was reused at once", pid)
	}
	return pid
}

// processGone reports whether pid has exited (a zombie counts as gone).
func processGone(pid int) bool {
	_, state, err := readOwner(pid)
	return err != nil || state == 'Z' || state == 'X'
}

func TestSweep(t *testing.T) {
	requireLab(t)
	self, err := selfOwner()
	if err != nil {
		t.Fatal(err)
	}
	dead := owner{pid: deadPID(t), start: 77}
	tests := []struct {
		name     string
		ns       string
		occupied bool // run a process inside
		gone     bool // Sweep must remove it
	}{
		{"dead owner switch", nsName(dead, 1, "sw"), false, true},
		{"dead owner host with a process", nsName(dead, 1, "a"), true, true},
		{"reused PID (start time differs)", nsName(owner{pid: self.pid, start: self.start + 1}, 1, "sw"), false, true},
		{"live owner (this process)", nsName(self, 1<<40, "sw"), true, false},
		{"not a lab name", fmt.Sprintf("shoaltest%d-0-1-sw", dead.pid), false, false},
		{"lab prefix, bad scheme", fmt.Sprintf("shl%d-sw", dead.pid), false, false},
	}
	var procs []*exec.Cmd
	for _, tt := range tests {
		if out, err := exec.Command("ip", "netns", "add", tt.ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", tt.ns, err, out)
		}
		t.Cleanup(func() {
			if nsExists(tt.ns) {
				if err := removeNS(context.Background(), testLogger(t), tt.ns); err != nil {
					t.Error(err)
				}
			}
		})
		if tt.occupied {
			cmd := nsCommand(t.Context(), tt.ns, "sleep", "1000")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			procs = append(procs, cmd)
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		}
	}
	time.Sleep(200 * time.Millisecond) // let ip netns exec enter

	if err := Sweep(testLogger(t)); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	list := netnsList(t)
	for _, tt := range tests {
		if gone := !slices.Contains(list, tt.ns); gone != tt.gone {
			t.Errorf("%s: namespace %s gone=%v, want %v", tt.name, tt.ns, gone, tt.gone)
		}
	}
	// The process in the dead owner's namespace was killed, the one in
	// ours was not.
	if !processGone(procs[0].Process.Pid) {
		t.Errorf("process in a swept namespace survives")
	}
	if processGone(procs[1].Process.Pid) {
		t.Errorf("process in a live lab's namespace was killed")
	}
}

// TestSweepAfterKilledRun kills a test binary that owns a lab (with a
// process running inside) and checks that the next New sweeps it away.
func TestSweepAfterKilledRun(t *testing.T) {
	requireLab(t)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperKilledRun$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SHOAL_LAB_HELPER=1")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var namespaces []string
	var sleeper int
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			f := strings.Fields(rest)
			sleeper, _ = strconv.Atoi(f[0])
			namespaces = f[1:]
			break
		}
	}
	if len(namespaces) != 3 || sleeper == 0 {
		t.Fatalf("helper did not report its lab (scan error %v)", sc.Err())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("helper: %v, want killed", err)
	}
	if list := netnsList(t); !slices.Contains(list, namespaces[0]) {
		t.Fatalf("the killed run's namespaces vanished before the sweep: %v", list)
	}

	newLab(t, Config{}) // New sweeps
	list := netnsList(t)
	for _, ns := range namespaces {
		if slices.Contains(list, ns) {
			t.Errorf("namespace %s of the killed run survived New's sweep", ns)
		}
	}
	if !processGone(sleeper) {
		t.Errorf("process %d left by the killed run still runs", sleeper)
	}
}

// TestHelperKilledRun is the test binary TestSweepAfterKilledRun kills.
func TestHelperKilledRun(t *testing.T) {
	if os.Getenv("SHOAL_LAB_HELPER") != "1" {
		t.Skip("helper process for TestSweepAfterKilledRun")
	}
	l, err := New(t.Context(), Config{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	cmd := a.Command(t.Context(), "sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	fmt.Printf("READY %d %s %s %s\n", cmd.Process.Pid, l.SwitchNS(), a.NS, b.NS)
	time.Sleep(time.Minute) // killed long before
}
