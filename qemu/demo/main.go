// Command demo shows shoal imaging several machines at once in the private
// virtual lab: a server and N clients, each in its own network namespace on
// one bridge, the clients writing to loop devices. `make demo` runs it.
//
// It needs root, and the shoal binaries in build/ (make build).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-lab/shoal/qemu/lab"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	clients := fs.Int("clients", 3, "number of client machines")
	sizeMiB := fs.Int("size", 256, "image size in MiB")
	bin := fs.String("bin", "build", "directory with the shoal and shoal-client binaries")
	work := fs.String("dir", "build/demo", "directory for the image, disks and logs")
	rate := fs.String("max-rate", "300M", "server rate cap")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := lab.Available(); err != nil {
		return fmt.Errorf("the demo needs the virtual lab: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(*work, "logs"), 0o755); err != nil {
		return err
	}
	img := filepath.Join(*work, "demo.img")
	fmt.Fprintf(stdout, "== making a %d MiB demo disk image (%s): random data with zero regions\n", *sizeMiB, img)
	if err := makeImage(img, int64(*sizeMiB)<<20); err != nil {
		return err
	}

	l, err := lab.New(ctx, lab.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer l.Close()
	srvHost, err := l.AddHost("server")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "== virtual lab: bridge in namespace %s, server %s\n", l.SwitchNS(), srvHost.Addr)

	var disks []string
	var procs []*exec.Cmd
	for i := 1; i <= *clients; i++ {
		h, err := l.AddHost(fmt.Sprintf("pc%d", i))
		if err != nil {
			return err
		}
		disk, detach, err := loopDisk(filepath.Join(*work, fmt.Sprintf("pc%d.disk", i)), int64(*sizeMiB)<<20)
		if err != nil {
			return err
		}
		defer detach()
		disks = append(disks, disk)
		logf, err := os.Create(filepath.Join(*work, "logs", fmt.Sprintf("pc%d.log", i)))
		if err != nil {
			return err
		}
		defer logf.Close()
		c := h.Command(ctx, filepath.Join(*bin, "shoal-client"), "--session", "demo", "--disk", disk)
		c.Stdout, c.Stderr = logf, logf
		if err := c.Start(); err != nil {
			return err
		}
		procs = append(procs, c)
		fmt.Fprintf(stdout, "== client pc%d at %s writes %s (log %s)\n", i, h.Addr, disk, logf.Name())
	}

	fmt.Fprintf(stdout, "== shoal serve --session demo --image %s --min-clients %d --max-rate %s\n\n", img, *clients, *rate)
	srv := srvHost.Command(ctx, filepath.Join(*bin, "shoal"), "serve", "--session", "demo", "--image", img,
		"--min-clients", fmt.Sprint(*clients), "--max-rate", *rate)
	srv.Stdout, srv.Stderr = stdout, stdout
	start := time.Now()
	srvErr := srv.Run()
	for _, c := range procs {
		c.Wait()
	}
	fmt.Fprintf(stdout, "\n== %d clients imaged in %s; disks on this machine:\n", *clients, time.Since(start).Round(time.Millisecond))
	want, _ := fileHash(img, -1)
	for i, d := range disks {
		got, _ := fileHash(d, int64(*sizeMiB)<<20)
		verdict := "MATCHES the image"
		if got != want {
			verdict = "DIFFERS from the image"
		}
		fmt.Fprintf(stdout, "   pc%d %s sha256 %x %s\n", i+1, d, got, verdict)
	}
	fmt.Fprintf(stdout, "== client logs: %s\n", filepath.Join(*work, "logs"))
	return srvErr
}

// makeImage writes a disk-like image: random blocks with long zero runs.
func makeImage(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if r.IntN(10) < 6 {
			clear(buf)
		} else {
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
		}
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			return err
		}
	}
	return nil
}

// loopDisk makes a blank backing file and a loop device on it.
func loopDisk(backing string, size int64) (string, func(), error) {
	if err := os.Truncate(backing, 0); err != nil && !os.IsNotExist(err) {
		return "", nil, err
	}
	f, err := os.Create(backing)
	if err != nil {
		return "", nil, err
	}
	f.Truncate(size)
	f.Close()
	out, err := exec.Command("losetup", "--find", "--show", backing).CombinedOutput()
	if err != nil {
		return "", nil, fmt.Errorf("losetup: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	return dev, func() { exec.Command("losetup", "-d", dev).Run() }, nil
}

func fileHash(path string, n int64) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	var r io.Reader = f
	if n >= 0 {
		r = io.LimitReader(f, n)
	}
	if _, err := io.Copy(h, r); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}
