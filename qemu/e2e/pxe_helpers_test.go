package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
)

var (
	shoalBinOnce sync.Once
	shoalBinPath string
	shoalBinErr  error
)

// shoalBinary builds the shoal server alone (no boot images), once per
// test binary, for the tests that need no VM.
func shoalBinary(t *testing.T) string {
	t.Helper()
	shoalBinOnce.Do(func() {
		shoalBinPath = filepath.Join(os.TempDir(), fmt.Sprintf("shoal-e2e-pxe-%d", os.Getpid()))
		cmd := exec.Command("go", "build", "-o", shoalBinPath, "./cmds/shoal")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			shoalBinErr = fmt.Errorf("go build ./cmds/shoal: %w\n%s", err, out)
		}
	})
	if shoalBinErr != nil {
		t.Fatal(shoalBinErr)
	}
	return shoalBinPath
}

// startShoal runs `shoal serve ARGS…` in host h; its output is logged at
// the end of the test.
func startShoal(ctx context.Context, t *testing.T, h *lab.Host, bin string, args ...string) *serveProc {
	t.Helper()
	cmd := h.Command(ctx, bin, append([]string{"serve"}, args...)...)
	s := &serveProc{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start shoal serve: %v", err)
	}
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
		t.Logf("shoal serve %s\noutput:\n%s", strings.Join(args, " "), s.out.String())
	})
	return s
}

// waitOutput waits until the server's output matches re.
func (s *serveProc) waitOutput(ctx context.Context, re *regexp.Regexp) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if re.MatchString(s.out.String()) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("server output never matched %q: %w", re, ctx.Err())
		case <-s.done:
			if re.MatchString(s.out.String()) {
				return nil
			}
			return fmt.Errorf("server exited (%v) before its output matched %q", s.err, re)
		case <-tick.C:
		}
	}
}

// httpGetIn fetches url from inside host h's namespace: the connection is
// dialled in the namespace, the request written by hand.
func httpGetIn(h *lab.Host, url string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	var conn net.Conn
	if err := h.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", req.URL.Host, 5*time.Second)
		return err
	}); err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	req.Close = true
	if err := req.Write(conn); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// startIPv6Router adds a lab host "rtr" that sends IPv6 router
// advertisements (dnsmasq, RA only: no DHCP, no DNS), as a lab's router
// would. iPXE waits about 13 s for one at every "Configuring" and gives
// up without; with it each VM boots two such waits faster.
func startIPv6Router(ctx context.Context, t *testing.T, l *lab.Lab) {
	t.Helper()
	h, err := l.AddHost("rtr")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(ctx, "ip", "-6", "addr", "add", "fd77::1/64", "dev", h.Iface, "nodad"); err != nil {
		t.Fatal(err)
	}
	runDnsmasq(ctx, t, h, "dnsmasq (router advertisements)", false,
		"--enable-ra", "--dhcp-range=::,constructor:"+h.Iface+",ra-only")
}

// runDnsmasq runs dnsmasq in host h, on its interface only, with no
// configuration file, DNS or lease file, and args for the service wanted.
// Its output is logged at the end of the test, or only when the test
// failed unless always.
func runDnsmasq(ctx context.Context, t *testing.T, h *lab.Host, what string, always bool, args ...string) *syncBuffer {
	t.Helper()
	out := &syncBuffer{}
	cmd := h.Command(ctx, "dnsmasq", append([]string{"--no-daemon", "--conf-file=/dev/null", "--port=0", "--no-resolv", "--no-hosts",
		"--interface=" + h.Iface, "--bind-interfaces", "--leasefile-ro", "--log-facility=-"}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if always || t.Failed() {
			t.Logf("%s output:\n%s", what, out.String())
		}
	})
	return out
}
