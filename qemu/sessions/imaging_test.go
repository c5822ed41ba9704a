package sessions

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// realisticImage builds scripts/mkimage.sh's realistic GPT disk image once
// per test run and returns its path, size and SHA-256.
var realistic struct {
	once sync.Once
	path string
	size int64
	sum  [32]byte
	err  error
	dir  string
}

func realisticImage(t *testing.T) (string, int64, [32]byte) {
	t.Helper()
	realistic.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "mkimage.sh")
		dir, err := os.MkdirTemp("", "shoal-realistic-")
		if err != nil {
			realistic.err = err
			return
		}
		realistic.dir = dir
		realistic.path = filepath.Join(dir, "lab.img")
		if out, err := exec.Command(script, realistic.path, "256").CombinedOutput(); err != nil {
			realistic.err = fmt.Errorf("mkimage.sh: %v: %s", err, out)
			return
		}
		fi, err := os.Stat(realistic.path)
		if err != nil {
			realistic.err = err
			return
		}
		realistic.size = fi.Size()
	})
	if realistic.err != nil {
		t.Fatal(realistic.err)
	}
	realistic.sum = hashPrefix(t, realistic.path, realistic.size)
	return realistic.path, realistic.size, realistic.sum
}

// partitions reads a disk image's partition table with sfdisk.
type partition struct {
	Start, Size int64 // sectors
}

func partitions(t *testing.T, path string) []partition {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", path, err)
	}
	var pt struct {
		PartitionTable struct {
			LastLBA    int64       `json:"lastlba"`
			Partitions []partition `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &pt); err != nil {
		t.Fatal(err)
	}
	return pt.PartitionTable.Partitions
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// loopOver makes a loop device over a byte range of a file (the kernel
// here has no partition-table support, so partitions are reached this way).
func loopOver(t *testing.T, file string, offset, size int64, readOnly bool) string {
	t.Helper()
	args := []string{"--find", "--show", "--offset", strconv.FormatInt(offset, 10), "--sizelimit", strconv.FormatInt(size, 10)}
	if readOnly {
		args = append(args, "--read-only")
	}
	dev := strings.TrimSpace(run(t, "losetup", append(args, file)...))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// TestRealisticPackedSession packs a realistic disk image, verifies it, and
// multicasts it to three clients on loop devices: every device equals the
// raw image, its ext4 passes e2fsck, and the session sent less than 40 %
// of the raw size.
func TestRealisticPackedSession(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2", "c3")
	raw, size, sum := realisticImage(t)
	packed := filepath.Join(t.TempDir(), "lab.shoal")
	shoal := filepath.Join(binDir, "shoal")
	run(t, shoal, "image", "pack", "-q", raw, packed)
	run(t, shoal, "image", "verify", packed)
	info := run(t, shoal, "image", "info", packed)
	t.Logf("shoal image info:\n%s", info)

	var devs []string
	for range 3 {
		devs = append(devs, loopDevice(t, size, 0xee))
	}
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "real", "--image", packed, "--min-clients", "3")
	var clients []*proc
	for i, n := range []string{"c1", "c2", "c3"} {
		clients = append(clients, start(t, hosts[n], n, "shoal-client", "--session", "real", "--disk", devs[i]))
	}
	if code := srv.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("server exit status %d", code)
	}
	parts := partitions(t, raw)
	root := parts[len(parts)-1]
	for i, c := range clients {
		if code := c.wait(t, 10*time.Second); code != 0 {
			t.Errorf("%s exit status %d", c.name, code)
		}
		if got := hashPrefix(t, devs[i], size); got != sum {
			t.Errorf("%s: %s has SHA-256 %x, want %x", c.name, devs[i], got, sum)
		}
		checkOK(t, srv, hosts[c.name].Addr.String(), sum)
		part := loopOver(t, devs[i], root.Start*512, root.Size*512, true)
		if out, err := exec.Command("e2fsck", "-fn", part).CombinedOutput(); err != nil {
			t.Errorf("%s: e2fsck -fn on the written root partition: %v\n%s", c.name, err, out)
		}
	}
	l := srv.waitLine(t, `sent [\d.]+ MiB of chunk data`, time.Second)
	sentMiB, _ := strconv.ParseFloat(regexp.MustCompile(`sent ([\d.]+) MiB`).FindStringSubmatch(l.text)[1], 64)
	ratio := sentMiB * (1 << 20) / float64(size)
	t.Logf("sent %.1f MiB for a %d MiB raw image: %.1f %%", sentMiB, size>>20, 100*ratio)
	if ratio >= 0.40 {
		t.Errorf("sent %.1f %% of the raw size, want < 40 %%: %s", 100*ratio, l.text)
	}
}

// TestCorruptPackedImage flips one byte of a packed image's data: verify
// names the chunk, and serve refuses the image with the chunk number.
func TestCorruptPackedImage(t *testing.T) {
	requireLab(t)
	raw, _, _ := realisticImage(t)
	packed := filepath.Join(t.TempDir(), "lab.shoal")
	shoal := filepath.Join(binDir, "shoal")
	run(t, shoal, "image", "pack", "-q", raw, packed)
	fi, err := os.Stat(packed)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(packed, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Chunk data fills the file after the manifest; flip a byte well inside.
	off := fi.Size() - fi.Size()/3
	b := []byte{0}
	f.ReadAt(b, off)
	b[0] ^= 0x01
	f.WriteAt(b, off)
	f.Close()
	chunk := regexp.MustCompile(`chunk \d+`)
	out, err := exec.Command(shoal, "image", "verify", packed).CombinedOutput()
	if err == nil || !chunk.Match(out) {
		t.Errorf("verify of a corrupt image: err=%v, output:\n%s", err, out)
	}
	out, err = exec.Command(shoal, "serve", "--session", "x", "--image", packed, "--plain").CombinedOutput()
	if err == nil || !chunk.Match(out) {
		t.Errorf("serve of a corrupt image: err=%v, output:\n%s", err, out)
	}
	t.Logf("serve says: %s", strings.TrimSpace(string(out)))
}

// TestBadDiskReported makes one client's disk hold a wrong byte (fault
// injection right after a chunk is written): the client fails naming the
// chunk, the server's table says so, and the server exits non-zero. Chunk
// 0 is in the head the writer puts on the disk last.
func TestBadDiskReported(t *testing.T) {
	tests := []struct {
		verify string
		chunk  int
	}{{"chunks", 5}, {"chunks", 0}, {"full", 5}}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("verify %s, chunk %d", tt.verify, tt.chunk), func(t *testing.T) {
			hosts := newLab(t, "srv", "c1", "c2")
			img, sum := randomImage(t, 16*mib, 18)
			dir := t.TempDir()
			srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "bad", "--image", img, "--min-clients", "2")
			good := start(t, hosts["c1"], "good", "shoal-client", "--session", "bad", "--disk", filepath.Join(dir, "good.img"))
			badCmd := hosts["c2"].Command(t.Context(), "env", fmt.Sprintf("SHOAL_FAULT_CORRUPT_CHUNK=%d", tt.chunk), filepath.Join(binDir, "shoal-client"),
				"--session", "bad", "--disk", filepath.Join(dir, "bad.img"), "--verify", tt.verify)
			out, err := badCmd.CombinedOutput()
			if err == nil {
				t.Errorf("client with a corrupting disk exited 0:\n%s", out)
			}
			want := fmt.Sprintf("chunk %d ", tt.chunk)
			if !strings.Contains(string(out), want) {
				t.Errorf("client output does not name %q:\n%s", want, out)
			}
			if code := srv.wait(t, time.Minute); code == 0 {
				t.Errorf("server exit status 0 although a disk read back wrong")
			}
			if code := good.wait(t, 10*time.Second); code != 0 {
				t.Errorf("good client exit status %d", code)
			}
			checkOK(t, srv, hosts["c1"].Addr.String(), sum)
			row := tableRow(t, srv, hosts["c2"].Addr.String())
			if row[2] == "ok" {
				t.Errorf("the bad disk's row says ok: %q", row)
			}
			srv.waitLine(t, `client \d+ .*`+want, time.Second)
		})
	}
}

// TestPartitionImage writes a partition image into partition 2 of a larger
// disk: partitions 1 and 3 stay byte-identical.
func TestPartitionImage(t *testing.T) {
	hosts := newLab(t, "srv", "c1")
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	// 3 partitions of 16 MiB each, filled with different bytes.
	run(t, "truncate", "-s", "52M", disk)
	sfd := exec.Command("sfdisk", "--quiet", disk)
	sfd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=32768\nstart=34816, size=32768\nstart=67584, size=32768\n")
	if out, err := sfd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	parts := partitions(t, disk)
	if len(parts) != 3 {
		t.Fatalf("partitions: %+v", parts)
	}
	for _, p := range parts {
		dev := loopOver(t, disk, p.Start*512, p.Size*512, false)
		run(t, "dd", "if=/dev/urandom", "of="+dev, "bs=1M", "count=16", "status=none")
	}
	before := map[int][32]byte{}
	for _, i := range []int{0, 2} {
		before[i] = hashPrefix(t, loopOver(t, disk, parts[i].Start*512, parts[i].Size*512, true), parts[i].Size*512)
	}
	// A 12 MiB partition image (an ext4 file system) for the 16 MiB partition 2.
	img := filepath.Join(dir, "part.img")
	run(t, "truncate", "-s", "12M", img)
	run(t, "mkfs.ext4", "-q", "-F", img)
	sum := hashPrefix(t, img, 12*mib)
	target := loopOver(t, disk, parts[1].Start*512, parts[1].Size*512, false)

	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "part", "--image", img, "--min-clients", "1")
	c := start(t, hosts["c1"], "c1", "shoal-client", "--session", "part", "--disk", target)
	if code := srv.wait(t, time.Minute); code != 0 {
		t.Fatalf("server exit status %d", code)
	}
	if code := c.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("client exit status %d", code)
	}
	if got := hashPrefix(t, target, 12*mib); got != sum {
		t.Errorf("partition 2 holds SHA-256 %x, want the image's %x", got, sum)
	}
	for _, i := range []int{0, 2} {
		got := hashPrefix(t, loopOver(t, disk, parts[i].Start*512, parts[i].Size*512, true), parts[i].Size*512)
		if got != before[i] {
			t.Errorf("partition %d changed", i+1)
		}
	}
}

// TestGPTOnLargerDisk writes a GPT image to a loop device twice its size:
// sgdisk -v finds no problem, and with --grow the last partition ends at
// the end of the disk.
func TestGPTOnLargerDisk(t *testing.T) {
	hosts := newLab(t, "srv", "c1", "c2")
	raw, size, sum := realisticImage(t)
	plain := loopDevice(t, 2*size, 0)
	grown := loopDevice(t, 2*size, 0)
	srv := start(t, hosts["srv"], "server", "shoal", "serve", "--session", "gpt", "--image", raw, "--min-clients", "2")
	c1 := start(t, hosts["c1"], "plain", "shoal-client", "--session", "gpt", "--disk", plain)
	c2 := start(t, hosts["c2"], "grow", "shoal-client", "--session", "gpt", "--disk", grown, "--grow")
	if code := srv.wait(t, 3*time.Minute); code != 0 {
		t.Fatalf("server exit status %d", code)
	}
	for _, c := range []*proc{c1, c2} {
		if code := c.wait(t, 10*time.Second); code != 0 {
			t.Fatalf("%s exit status %d", c.name, code)
		}
	}
	checkOK(t, srv, hosts["c1"].Addr.String(), sum)
	checkOK(t, srv, hosts["c2"].Addr.String(), sum)
	for _, dev := range []string{plain, grown} {
		out := run(t, "sgdisk", "-v", dev)
		if !strings.Contains(out, "No problems found") {
			t.Errorf("sgdisk -v %s:\n%s", dev, out)
		}
	}
	var pt struct {
		PartitionTable struct {
			LastLBA    int64       `json:"lastlba"`
			Partitions []partition `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", grown)), &pt); err != nil {
		t.Fatal(err)
	}
	last := pt.PartitionTable.Partitions[len(pt.PartitionTable.Partitions)-1]
	if end := last.Start + last.Size - 1; end != pt.PartitionTable.LastLBA {
		t.Errorf("with --grow the last partition ends at sector %d, the disk's last usable sector is %d", end, pt.PartitionTable.LastLBA)
	}
	orig := partitions(t, raw)
	if last.Size <= orig[len(orig)-1].Size {
		t.Errorf("--grow did not grow the last partition: %d sectors, was %d", last.Size, orig[len(orig)-1].Size)
	}
}
