package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/shoal-lab/shoal/internal/filehash"
)

// serveHTTP is the unicast anchor's server: it runs inside the sender's
// namespace (the bench binary re-executes itself with -serve-http).
func serveHTTP(addr, root string) error {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening")
	return http.Serve(ln, http.FileServer(http.Dir(root)))
}

// fetch downloads url to out (inside a receiver's namespace).
func fetch(url, out string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runHTTP has every receiver download img at once from one HTTP server.
func (e *env) runHTTP(ctx context.Context, img string, size int64, want [32]byte) (result, error) {
	res := result{Tool: "unicast", N: len(e.receivers)}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	srv := e.sender.Command(sctx, e.self, "-serve-http", e.sender.Addr.String()+":8080", "-root", filepath.Dir(img))
	pr, err := srv.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := srv.Start(); err != nil {
		return res, err
	}
	buf := make([]byte, 64)
	if _, err := pr.Read(buf); err != nil {
		return res, fmt.Errorf("http server did not start: %w", err)
	}
	url := fmt.Sprintf("http://%s:8080/%s", e.sender.Addr, filepath.Base(img))
	tx0 := txBytes(ctx, e.sender)
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last time.Time
	var errs []error
	for i, h := range e.receivers {
		out := filepath.Join(e.dir, fmt.Sprintf("http-%d.out", i))
		os.Remove(out)
		c := h.Command(ctx, e.self, "-fetch", url, "-out", out)
		wg.Add(1)
		go func(c *exec.Cmd) {
			defer wg.Done()
			b, err := c.CombinedOutput()
			s, herr := filehash.SHA256(out, size)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%v: %s", err, b))
			}
			if herr == nil && s == want {
				res.OK++
			}
			if now := time.Now(); now.After(last) {
				last = now
			}
			res.RecvCPU += cpuTime(c)
		}(c)
	}
	wg.Wait()
	res.Wall = last.Sub(start)
	res.WireBytes = txBytes(ctx, e.sender) - tx0
	stop()
	srv.Wait()
	res.SenderCPU = cpuTime(srv)
	return res, errors.Join(errs...)
}
