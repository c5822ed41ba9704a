package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/pin/tftp/v3"
)

// TFTPPort is the TFTP server port.
const TFTPPort = 69

// errTFTPNotFound is what a TFTP client asking for anything but an iPXE
// binary is told.
var errTFTPNotFound = errors.New("file not found")

// tftpServer serves the iPXE binaries, read-only, with pin/tftp. A name
// may carry a MAC as its directory ("52-54-00-12-34-56/undionly.kpxe",
// see chainFile); fetched is then told when that client got the whole
// file.
type tftpServer struct {
	log     *slog.Logger
	conn    *net.UDPConn
	srv     *tftp.Server
	dir     string                     // where the binaries are
	files   map[string]bool            // the names served
	fetched func(mac net.HardwareAddr) // nil: nobody to tell

	closeOnce sync.Once
	closed    chan struct{}
	served    sync.WaitGroup
}

// newTFTPServer serves files (base names in dir) on conn.
func newTFTPServer(conn *net.UDPConn, dir string, files []string, fetched func(net.HardwareAddr), log *slog.Logger) *tftpServer {
	t := &tftpServer{log: log, conn: conn, dir: dir, files: map[string]bool{}, fetched: fetched, closed: make(chan struct{})}
	for _, f := range files {
		t.files[f] = true
	}
	t.srv = tftp.NewServer(t.read, nil)
	t.srv.SetTimeout(2 * time.Second)
	t.srv.SetRetries(5)
	return t
}

// resolve maps a requested name to a file and, for a per-MAC name, the
// MAC.
func (t *tftpServer) resolve(name string) (file string, mac net.HardwareAddr, err error) {
	clean := path.Clean("/" + name)[1:]
	dir, base := path.Split(clean)
	if !t.files[base] {
		return "", nil, errTFTPNotFound
	}
	if dir != "" {
		if mac, err = parseMACDashes(dir[:len(dir)-1]); err != nil {
			return "", nil, errTFTPNotFound
		}
	}
	return filepath.Join(t.dir, base), mac, nil
}

// read is pin/tftp's read handler: one transfer.
func (t *tftpServer) read(name string, rf io.ReaderFrom) error {
	peer := "?"
	if ot, ok := rf.(tftp.OutgoingTransfer); ok {
		a := ot.RemoteAddr()
		peer = a.IP.String()
	}
	file, mac, err := t.resolve(name)
	if err != nil {
		t.log.Warn("TFTP: refused", "file", name, "client", peer, "err", err)
		return fmt.Errorf("%q: %w", name, err)
	}
	f, err := os.Open(file)
	if err != nil {
		t.log.Error("TFTP: cannot open", "file", file, "err", err)
		return errTFTPNotFound
	}
	defer f.Close()
	start := time.Now()
	n, err := rf.ReadFrom(f)
	if err != nil {
		t.log.Warn("TFTP: transfer failed", "file", name, "client", peer, "after", n, "err", err)
		return err
	}
	t.log.Info("PXE: TFTP sent "+path.Base(file), "client", peer, "mac", mac.String(), "bytes", n, "in", time.Since(start).Round(time.Millisecond))
	if mac != nil && t.fetched != nil {
		t.fetched(mac)
	}
	return nil
}

// Serve serves until ctx ends or Close is called, then waits for the
// transfers under way (each gives up after its retries) and returns nil.
func (t *tftpServer) Serve(ctx context.Context) error {
	t.served.Add(1)
	defer t.served.Done()
	select {
	case <-t.closed:
		return nil
	default:
	}
	stop := context.AfterFunc(ctx, t.shutdown)
	defer stop()
	err := t.srv.Serve(t.conn)
	// Serve returns once shut down; the transfers under way end in
	// Shutdown, which shutdown waits for.
	t.shutdown()
	if err != nil {
		return fmt.Errorf("tftp: %w", err)
	}
	return nil
}

// shutdown stops the server and waits for its transfers; concurrent
// callers all wait until that is done.
func (t *tftpServer) shutdown() {
	t.closeOnce.Do(func() {
		close(t.closed)
		t.srv.Shutdown()
	})
}

// Close stops Serve and waits for it. It is idempotent.
func (t *tftpServer) Close() error {
	t.shutdown()
	t.conn.Close()
	t.served.Wait()
	return nil
}
