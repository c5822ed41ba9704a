package sessions

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
)

// binDir holds the shoal and shoal-client binaries built for this run.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "shoal-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/shoal-lab/shoal/cmds/shoal", "github.com/shoal-lab/shoal/cmds/shoal-client")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		return 1
	}
	binDir = dir
	code := m.Run()
	if realistic.dir != "" {
		os.RemoveAll(realistic.dir)
	}
	return code
}

// requireLab skips the test when the lab cannot run here, unless
// SHOAL_REQUIRE_LAB=1 (make test, CI), where that is a failure.
func requireLab(t *testing.T) {
	t.Helper()
	if err := lab.Available(); err != nil {
		if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
			t.Fatalf("the virtual lab is required (SHOAL_REQUIRE_LAB=1) but unavailable: %v", err)
		}
		t.Skipf("virtual lab unavailable (run as root, or set SHOAL_REQUIRE_LAB=1 to make this fail): %v", err)
	}
}

// newLab builds a lab with the named hosts and removes it when the test ends.
func newLab(t *testing.T, names ...string) map[string]*lab.Host {
	t.Helper()
	_, hosts := newLabAndHosts(t, names...)
	return hosts
}

// newLabAndHosts is newLab that also returns the lab itself (for
// impair.Insert and the like).
func newLabAndHosts(t *testing.T, names ...string) (*lab.Lab, map[string]*lab.Host) {
	t.Helper()
	requireLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := lab.New(ctx, lab.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close lab: %v", err)
		}
	})
	hosts := map[string]*lab.Host{}
	for _, n := range names {
		h, err := l.AddHost(n)
		if err != nil {
			t.Fatalf("add host %s: %v", n, err)
		}
		hosts[n] = h
	}
	return l, hosts
}

// line is one line of a process's output and when it arrived.
type line struct {
	at   time.Time
	text string
}

// proc is a running shoal or shoal-client process in a lab host.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	mu     sync.Mutex
	lines  []line
	notify chan struct{} // closed and replaced on every new line
	done   chan struct{}
	code   int
	logf   func(string, ...any)
}

// start runs a binary from binDir inside host h, collecting its output.
func start(t *testing.T, h *lab.Host, name, bin string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := h.Command(ctx, filepath.Join(binDir, bin), args...)
	p := &proc{name: name, cmd: cmd, notify: make(chan struct{}), done: make(chan struct{}), logf: t.Logf}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdin = stdin
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.add(sc.Text())
		}
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		p.mu.Lock()
		p.code = exitCode(err)
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
		if t.Failed() {
			t.Logf("--- output of %s (exit %d) ---\n%s", p.name, p.exitCode(), p.output())
		}
	})
	return p
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

func (p *proc) add(text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line{at: time.Now(), text: text})
	close(p.notify)
	p.notify = make(chan struct{})
}

func (p *proc) exitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		fmt.Fprintf(&b, "%s %s\n", l.at.Format("15:04:05.000"), l.text)
	}
	return b.String()
}

// waitLine waits for a line matching pattern and returns it.
func (p *proc) waitLine(t *testing.T, pattern string, timeout time.Duration) line {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.After(timeout)
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if re.MatchString(p.lines[seen].text) {
				l := p.lines[seen]
				p.mu.Unlock()
				return l
			}
		}
		notify := p.notify
		p.mu.Unlock()
		select {
		case <-notify:
		case <-p.done:
			// Drain what arrived before the exit.
			time.Sleep(50 * time.Millisecond)
			p.mu.Lock()
			for ; seen < len(p.lines); seen++ {
				if re.MatchString(p.lines[seen].text) {
					l := p.lines[seen]
					p.mu.Unlock()
					return l
				}
			}
			p.mu.Unlock()
			t.Fatalf("%s exited (status %d) without printing a line matching %q", p.name, p.exitCode(), pattern)
		case <-deadline:
			t.Fatalf("%s printed no line matching %q within %s", p.name, pattern, timeout)
		}
	}
}

// wait waits for the process to exit and returns its status.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		time.Sleep(50 * time.Millisecond) // let the output reader finish
		return p.exitCode()
	case <-time.After(timeout):
		t.Fatalf("%s still running after %s", p.name, timeout)
		return 0
	}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// randomImage writes a file of size pseudo-random bytes and returns its
// path and SHA-256.
func randomImage(t *testing.T, size int64, seed uint64) (string, [32]byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("image-%d.img", seed))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 7})
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for done := int64(0); done < size; {
		n := min(int64(len(buf)), size-done)
		r.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		done += n
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return path, sum
}

// loopDevice makes a loop device backed by a new file of size bytes, filled
// with fill, and detaches it when the test ends.
func loopDevice(t *testing.T, size int64, fill byte) string {
	t.Helper()
	backing := filepath.Join(t.TempDir(), fmt.Sprintf("disk-%d-%d.raw", size, fill))
	if err := os.WriteFile(backing, []byte(strings.Repeat(string([]byte{fill}), int(size))), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// hashPrefix is the SHA-256 of the first n bytes of path.
func hashPrefix(t *testing.T, path string, n int64) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if got, err := io.Copy(h, io.LimitReader(f, n)); err != nil || got != n {
		t.Fatalf("read %s: %d of %d bytes: %v", path, got, n, err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// tableRow finds the server's summary row for a client address: the fields
// from the MAC on (mac, ip, result, bytes, sha256, time).
func tableRow(t *testing.T, srv *proc, addr string) []string {
	t.Helper()
	srv.mu.Lock()
	lines := append([]line(nil), srv.lines...)
	srv.mu.Unlock()
	inTable := false
	for _, l := range lines {
		if strings.HasPrefix(l.text, "CLIENT ") {
			inTable = true
			continue
		}
		if !inTable {
			continue
		}
		f := strings.Fields(l.text)
		for i, v := range f {
			if v == addr && i >= 1 && strings.Count(f[i-1], ":") == 5 {
				return f[i-1:]
			}
		}
	}
	t.Fatalf("no summary row for %s in the server's output", addr)
	return nil
}

// checkOK asserts a client's summary row says ok with the right hash.
func checkOK(t *testing.T, srv *proc, addr string, sum [32]byte) {
	t.Helper()
	row := tableRow(t, srv, addr) // mac ip result bytes sha time
	if len(row) < 5 || row[2] != "ok" || row[4] != fmt.Sprintf("%x", sum) {
		t.Errorf("summary row for %s = %q, want ok with SHA-256 %x", addr, row, sum)
	}
}
