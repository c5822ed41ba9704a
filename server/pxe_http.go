package server

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"time"
)

// pxeHTTP serves what iPXE loads over HTTP: the script, the kernel and
// the initramfs, under /pxe/.
type pxeHTTP struct {
	log            *slog.Logger
	self           netip.AddrPort // the HTTP server as clients reach it, for URLs
	kernel, initrd string         // files
	params         BootParams
	booter         *pxeBooter
}

// register adds the routes to mux.
func (h *pxeHTTP) register(mux *http.ServeMux) {
	mux.HandleFunc("GET /pxe/boot.ipxe", h.script)
	mux.HandleFunc("GET /pxe/"+pxeKernelName, func(w http.ResponseWriter, r *http.Request) { h.file(w, r, h.kernel) })
	mux.HandleFunc("GET /pxe/"+pxeInitrdName, func(w http.ResponseWriter, r *http.Request) { h.file(w, r, h.initrd) })
}

// script answers GET /pxe/boot.ipxe[?mac=52-54-00-12-34-56].
func (h *pxeHTTP) script(w http.ResponseWriter, r *http.Request) {
	// The URLs in the script use the address the client reached us at.
	host := r.Host
	if host == "" || !safeCmdlineValue(host) {
		host = h.self.String()
	}
	body := ipxeScript("http://"+host+"/pxe/", h.self.Addr(), h.params)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
	args := []any{"client", remoteIP(r)}
	if m := r.URL.Query().Get("mac"); m != "" {
		if mac, err := parseMACDashes(m); err == nil {
			h.booter.scriptFetched(mac)
			args = append(args, "mac", mac.String())
		}
	}
	h.log.Info("PXE: HTTP sent the iPXE script", args...)
}

// file serves one file, opened afresh for each request so that a rebuilt
// kernel or initramfs is picked up.
func (h *pxeHTTP) file(w http.ResponseWriter, r *http.Request, name string) {
	f, err := os.Open(name)
	if err != nil {
		h.log.Error("PXE: HTTP cannot open", "file", name, "err", err)
		http.Error(w, "not available", http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "not available", http.StatusInternalServerError)
		return
	}
	start := time.Now()
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", fi.ModTime(), f)
	if r.Method == http.MethodGet {
		h.log.Info("PXE: HTTP sent "+r.URL.Path[len("/pxe/"):], "client", remoteIP(r), "bytes", cw.n, "of", fi.Size(), "in", time.Since(start).Round(time.Millisecond))
	}
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// countingWriter counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}
