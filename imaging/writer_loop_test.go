package imaging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// packedRealistic opens the packed realistic image.
func packedRealistic(t testing.TB) *PackedImage {
	t.Helper()
	p, err := OpenPacked(realisticPacked(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// sparseFile makes a sparse file of size bytes, pre-filled at the given
// offsets with the given bytes.
func sparseFile(t testing.TB, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

// imageDisk writes src to the device with a Writer, chunks in random
// order, finishes and verifies by reading back.
func imageDisk(t testing.TB, dev string, src Source, opts WriterOptions) *Writer {
	t.Helper()
	tgt, err := OpenTarget(dev)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tgt.Close() })
	opts.Logger = testLogger(t)
	w, err := NewWriter(tgt, src.Manifest(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	if !w.direct.enabled() && !opts.NoDirect {
		t.Errorf("O_DIRECT is off on %s", dev)
	}
	writeChunks(t, w, src, shuffled(len(src.Manifest().Chunks), 5))
	if err := w.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := w.Verify(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != src.Manifest().ImageSHA256 || res.BadChunk != -1 {
		t.Fatalf("read back: %x, bad chunk %d; want %x", res.SHA256, res.BadChunk, src.Manifest().ImageSHA256)
	}
	return w
}

// TestWriterLoopDevice writes the realistic GPT image to a loop device of
// its own size: the device then holds exactly the image, its partitions
// appear, and the ext4 root checks clean.
func TestWriterLoopDevice(t *testing.T) {
	needRoot(t)
	needTools(t, "e2fsck", "sfdisk")
	src := packedRealistic(t)
	m := src.Manifest()
	disk := sparseFile(t, m.ImageSize)
	if err := os.WriteFile(disk, bytes.Repeat([]byte{0x5A}, 4<<20), 0o644); err != nil { // an old disk's head
		t.Fatal(err)
	}
	os.Truncate(disk, m.ImageSize)
	dev := loopDevice(t, disk, true)
	imageDisk(t, dev, src, WriterOptions{})
	if got := fileSHA256(t, dev, m.ImageSize); got != m.ImageSHA256 {
		t.Fatalf("device SHA-256 %x, image %x", got, m.ImageSHA256)
	}
	// BLKRRPART made the kernel see the image's partitions (where it
	// reads partition tables at all).
	p2, _ := partition(t, dev, disk, 2)
	t.Logf("e2fsck -fn %s: %s", p2, lastLine(run(t, "e2fsck", "-fn", p2)))
}

// TestWriterLoopFailedSession: a session that dies half way leaves a
// device with a blank first MiB and no partition table, not even the
// backup GPT the previous image left at the end of the (larger) disk.
func TestWriterLoopFailedSession(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk", "sgdisk")
	src := packedRealistic(t)
	m := src.Manifest()
	disk := sparseFile(t, m.ImageSize+64<<20)
	dev := loopDevice(t, disk, false)
	// The device held a good image before, its backup GPT at the disk's end.
	imageDisk(t, dev, src, WriterOptions{})
	run(t, "sfdisk", "--dump", dev)

	tgt, err := OpenTarget(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	w, err := NewWriter(tgt, m, WriterOptions{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	order := shuffled(len(m.Chunks), 6)
	writeChunks(t, w, src, order[:len(order)/2])
	w.Close()
	tgt.Close()

	head := make([]byte, HeadSize)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}
	if !isZero(head) {
		t.Fatal("the first MiB of a half-written disk is not zero")
	}
	if out, err := runErr("sfdisk", "--dump", dev); err == nil {
		t.Fatalf("sfdisk still finds a partition table:\n%s", out)
	}
	// gdisk would bring back the old partitions from a backup GPT; there
	// must be none.
	if out, _ := runErr("sgdisk", "--print", dev); !strings.Contains(out, "Creating new GPT entries") {
		t.Fatalf("sgdisk finds a GPT on the half-written disk:\n%s", out)
	}
}

// TestWriterLoopPartition writes a partition image into partition 2 of a
// larger disk: partitions 1 and 3, and partition 2 past the image, stay
// byte-identical.
func TestWriterLoopPartition(t *testing.T) {
	needRoot(t)
	needTools(t, "sfdisk")
	const mib = 1 << 20
	disk := sparseFile(t, 64*mib)
	run(t, "sh", "-c", fmt.Sprintf(`printf 'label: gpt\nstart=2048, size=%d\nsize=%d\nsize=%d\n' | sfdisk --quiet %s`, 16*2048, 24*2048, 16*2048, disk))
	// Fill every partition with a pattern that differs per MiB.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for off := int64(mib); off < 57*mib; off += mib {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte(off / mib)}, mib), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	before, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}

	img := syntheticImage(31, 256<<10, 60, 0) // 15 MiB, smaller than partition 2 (24 MiB)
	src := openPackedBytes(t, img, 256<<10)
	dev := loopDevice(t, disk, true)
	p2, kernel := partition(t, dev, disk, 2)
	w := imageDisk(t, p2, src, WriterOptions{Grow: true})
	if kernel && !w.t.IsPartition() {
		t.Error("a partition was not recognised as one")
	}

	after, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	p2Off, imgEnd, p2End := int64(17*mib), int64(17*mib+len(img)), int64(41*mib)
	if !bytes.Equal(after[p2Off:imgEnd], img) {
		t.Fatal("partition 2 does not hold the image")
	}
	for _, r := range [][2]int64{{0, p2Off}, {imgEnd, p2End}, {p2End, int64(len(after))}} {
		if !bytes.Equal(before[r[0]:r[1]], after[r[0]:r[1]]) {
			t.Fatalf("bytes [%d, %d) outside the image changed", r[0], r[1])
		}
	}
}

// TestWriterLoopGPTLargerDisk writes the realistic GPT image to a disk
// twice its size: the backup GPT moves to the disk's end (sgdisk -v finds
// no problems), the read back still matches the image, and with Grow the
// last partition reaches the last usable LBA while its ext4 checks clean.
func TestWriterLoopGPTLargerDisk(t *testing.T) {
	needRoot(t)
	needTools(t, "sgdisk", "sfdisk", "e2fsck")
	src := packedRealistic(t)
	m := src.Manifest()
	for _, grow := range []bool{false, true} {
		t.Run(fmt.Sprintf("grow=%v", grow), func(t *testing.T) {
			disk := sparseFile(t, 2*m.ImageSize)
			dev := loopDevice(t, disk, true)
			// An earlier system's GPT covered the whole disk.
			run(t, "sh", "-c", fmt.Sprintf(`printf 'label: gpt\nsize=100M\n' | sfdisk --quiet %s`, dev))
			imageDisk(t, dev, src, WriterOptions{Grow: grow})

			out := run(t, "sgdisk", "-v", dev)
			if !strings.Contains(out, "No problems found") {
				t.Fatalf("sgdisk -v:\n%s", out)
			}
			var pt struct {
				PartitionTable struct {
					LastLBA    int64 `json:"lastlba"`
					Partitions []struct {
						Start, Size int64
					}
				}
			}
			if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", dev)), &pt); err != nil {
				t.Fatal(err)
			}
			parts := pt.PartitionTable.Partitions
			diskSectors := 2 * m.ImageSize / 512
			if want := diskSectors - 34; pt.PartitionTable.LastLBA != want {
				t.Errorf("last usable LBA %d, want %d", pt.PartitionTable.LastLBA, want)
			}
			lastEnd := parts[len(parts)-1].Start + parts[len(parts)-1].Size - 1
			if grow != (lastEnd == pt.PartitionTable.LastLBA) {
				t.Errorf("grow=%v: the last partition ends at %d, the last usable LBA is %d", grow, lastEnd, pt.PartitionTable.LastLBA)
			}
			p2, _ := partition(t, dev, disk, 2)
			t.Logf("e2fsck -fn %s: %s", p2, lastLine(run(t, "e2fsck", "-fn", p2)))
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
