package main

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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
)

// httpPort is where shoal serve --pxe serves HTTP (its default).
const httpPort = 8080

// serverProc is the running `shoal serve`.
type serverProc struct {
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	err     error
}

// serverLog and clientLog are the server's log files under the logs dir.
const (
	serverLogName = "server.log"
	clientLogName = "clients.jsonl"
)

// startServer starts shoal serve with the whole PXE chain in the server's
// namespace and waits until it answers HTTP.
func (d *demo) startServer(ctx context.Context, n *network, img image) (*serverProc, error) {
	logFile, err := os.Create(filepath.Join(d.logs, serverLogName))
	if err != nil {
		return nil, err
	}
	clientLog := filepath.Join(d.logs, clientLogName)
	os.Remove(clientLog) // this run's results only
	args := []string{"serve", "--session", "demo", "--image", img.packed, "--interface", n.server.Iface,
		"--pxe", "--dhcp", n.dhcp, "--pxe-kernel", d.cfg.kernel, "--pxe-initrd", d.cfg.initrd,
		"--pxe-disk", "auto", "--pxe-after", "poweroff",
		"--min-clients", strconv.Itoa(d.cfg.vms), "--wait-after-join", "2m",
		"--log-clients", clientLog, "--log-level", "info"}
	if d.cfg.chainload {
		args = append(args, "--pxe-chainload")
	}
	if !d.tui {
		args = append(args, "--plain")
	}
	d.say("shoal %s", strings.Join(args, " "))
	s := &serverProc{logFile: logFile, done: make(chan struct{})}
	s.cmd = n.server.Command(ctx, filepath.Join(d.cfg.bin, "shoal"), args...)
	// Stopped early (Ctrl-C, timeout): ask it to stop, so that the live
	// view gives the terminal back.
	s.cmd.Cancel = func() error { return s.cmd.Process.Signal(syscall.SIGINT) }
	s.cmd.WaitDelay = 10 * time.Second
	if d.tui {
		// The live view owns the terminal; log lines go to the file.
		s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = d.stdin, os.Stdout, logFile
	} else {
		w := io.MultiWriter(d.out, logFile)
		s.cmd.Stdout, s.cmd.Stderr = w, w
	}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("shoal serve: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	url := fmt.Sprintf("http://%s:%d/api/status", n.server.Addr, httpPort)
	for !httpOK(n.server, url) {
		select {
		case <-s.done:
			logFile.Close()
			return nil, fmt.Errorf("shoal serve exited: %v (see %s)", s.err, logFile.Name())
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return s, nil
}

// httpOK tells whether a GET of url from inside host h succeeds.
func httpOK(h *lab.Host, url string) bool {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	var conn net.Conn
	if err := h.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", req.URL.Host, time.Second)
		return err
	}); err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	req.Close = true
	if req.Write(conn) != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// wait waits for the server to exit and returns its error.
func (s *serverProc) wait() error {
	<-s.done
	s.logFile.Close()
	return s.err
}

// stop asks the server to stop and waits for it.
func (s *serverProc) stop() {
	s.cmd.Process.Signal(syscall.SIGINT)
	s.wait()
}
