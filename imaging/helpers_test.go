package imaging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/internal/filehash"
)

// testTmp is a directory for this test binary's run, for what tests share
// (the realistic image); TestMain removes it.
var testTmp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-imaging-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTmp = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// realistic caches the image scripts/mkimage.sh builds, once per run.
var realistic struct {
	once sync.Once
	path string
	err  error
}

// realisticImage returns the path of a 256 MiB realistic disk image (GPT,
// FAT ESP, ext4 root with real files), built once per test run. Tests
// must not change it.
func realisticImage(t testing.TB) string {
	t.Helper()
	realistic.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "scripts", "mkimage.sh")
		realistic.path = filepath.Join(testTmp, "realistic.img")
		out, err := exec.Command(script, realistic.path, "256").CombinedOutput()
		if err != nil {
			realistic.err = fmt.Errorf("%s: %v\n%s", script, err, out)
		}
	})
	if realistic.err != nil {
		if _, err := exec.LookPath("mkfs.ext4"); err != nil {
			needLab(t, "mkfs.ext4 is not installed (scripts/deps.sh)")
		}
		t.Fatal(realistic.err)
	}
	return realistic.path
}

// realisticPackedCache caches the packed realistic image, once per run.
var realisticPackedCache struct {
	once sync.Once
	path string
	err  error
}

// realisticPacked returns the path of the realistic image packed with the
// default options, built once per test run. Tests must not change it.
func realisticPacked(t testing.TB) string {
	t.Helper()
	raw := realisticImage(t)
	realisticPackedCache.once.Do(func() {
		realisticPackedCache.path = filepath.Join(testTmp, "realistic.packed")
		_, realisticPackedCache.err = PackFile(context.Background(), raw, realisticPackedCache.path, PackOptions{})
	})
	if realisticPackedCache.err != nil {
		t.Fatal(realisticPackedCache.err)
	}
	return realisticPackedCache.path
}

// needLab skips a test that needs what this machine lacks (root, loop
// devices, a tool), or fails it when SHOAL_REQUIRE_LAB=1 (make test, CI).
func needLab(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("SHOAL_REQUIRE_LAB") == "1" {
		t.Fatalf("SHOAL_REQUIRE_LAB=1 but: %s", why)
	}
	t.Skipf("skipped: %s (set SHOAL_REQUIRE_LAB=1 to make this a failure)", why)
}

// needTools skips (or fails, see needLab) unless every tool is installed.
func needTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			needLab(t, tool+" is not installed (scripts/deps.sh)")
		}
	}
}

// needRoot skips (or fails) unless the test can make loop devices.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		needLab(t, "loop devices need root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		needLab(t, "no /dev/loop-control: "+err.Error())
	}
	needTools(t, "losetup")
}

// loopDevice attaches file to a free loop device (with partition scanning
// if partscan) and detaches it when the test ends.
func loopDevice(t testing.TB, file string, partscan bool) string {
	t.Helper()
	needRoot(t)
	args := []string{"--find", "--show"}
	if partscan {
		args = append(args, "--partscan")
	}
	out, err := exec.Command("losetup", append(args, file)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v\n%s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v\n%s", dev, err, out)
		}
	})
	return dev
}

// run runs a command and returns its combined output, failing the test
// if it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// syntheticImage makes an image of n chunks of chunkSize (the last one
// cut short by tail bytes if tail > 0) mixing zero, compressible and
// random chunks, deterministically from seed.
func syntheticImage(seed uint64, chunkSize, n, tail int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	size := chunkSize * n
	if tail > 0 {
		size = chunkSize*(n-1) + tail
	}
	img := make([]byte, size)
	words := []string{"shoal ", "multicast ", "chunk ", "disk ", "image ", "zstd ", "GPT ", "ext4 "}
	for i := 0; i < n; i++ {
		c := img[i*chunkSize : min(size, (i+1)*chunkSize)]
		switch i % 4 {
		case 0: // zero
		case 1, 2: // text: compresses
			var b bytes.Buffer
			for b.Len() < len(c) {
				b.WriteString(words[r.IntN(len(words))])
			}
			copy(c, b.Bytes())
		case 3: // random: stored raw
			for j := range c {
				c[j] = byte(r.Uint32())
			}
		}
	}
	return img
}

// writeFile writes b to a new file in the test's temp dir.
func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// packBytes packs img into a file and returns its path and manifest.
func packBytes(t testing.TB, img []byte, opts PackOptions) (string, *Manifest) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.packed")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := Pack(context.Background(), bytes.NewReader(img), int64(len(img)), f, opts)
	if err != nil {
		t.Fatal(err)
	}
	return p, m
}

// fileSHA256 hashes the first n bytes of path.
func fileSHA256(t testing.TB, path string, n int64) [32]byte {
	t.Helper()
	sum, err := filehash.SHA256(path, n)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// flipByte flips every bit of the byte at off in path.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xFF
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// runErr runs a command and returns its combined output and error.
func runErr(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// testLogger logs through t.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// partition returns a block device for partition n of the loop device dev
// (attached with partition scanning) backed by file: the kernel's own
// partition device where it has one, and otherwise — kernels built without
// partition table support, like some minimal VM kernels — a loop device
// over the partition's byte range. kernel reports which.
func partition(t testing.TB, dev, file string, n int) (path string, kernel bool) {
	t.Helper()
	p := fmt.Sprintf("%sp%d", dev, n)
	for range 50 {
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
		time.Sleep(20 * time.Millisecond)
	}
	var pt struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct{ Start, Size int64 }
		}
	}
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", file)), &pt); err != nil {
		t.Fatal(err)
	}
	if n < 1 || n > len(pt.PartitionTable.Partitions) {
		t.Fatalf("%s has no partition %d", file, n)
	}
	ss := max(pt.PartitionTable.SectorSize, 512)
	part := pt.PartitionTable.Partitions[n-1]
	out := run(t, "losetup", "--find", "--show", "--offset", fmt.Sprint(part.Start*ss), "--sizelimit", fmt.Sprint(part.Size*ss), file)
	loop := strings.TrimSpace(out)
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v\n%s", loop, err, out)
		}
	})
	t.Logf("no kernel partition device %s (no partition table support?); using %s over its byte range", p, loop)
	return loop, false
}
