package imaging

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// gptImage makes an 8 MiB disk image with a GPT of two partitions.
func gptImage(t *testing.T) []byte {
	t.Helper()
	needTools(t, "sfdisk")
	path := writeFile(t, "gpt.img", make([]byte, 8<<20))
	cmd := exec.Command("sfdisk", "--quiet", path)
	cmd.Stdin = strings.NewReader("label: gpt\nsize=2M\nsize=4M\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPlanGPT applies planned fix-ups to an image copied onto a file
// twice its size and checks the result with sgdisk and sfdisk.
func TestPlanGPT(t *testing.T) {
	needTools(t, "sgdisk")
	img := gptImage(t)
	const disk = 16 << 20
	for _, grow := range []bool{false, true} {
		plan, err := planGPT(img[:HeadSize], disk, 512, grow)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, disk)
		copy(out, img)
		for _, p := range plan.patches {
			if !bytes.Equal(out[p.off:p.off+int64(len(p.orig))], p.orig) {
				t.Fatalf("patch at %d: orig is not the image's bytes", p.off)
			}
			copy(out[p.off:], p.want)
		}
		for _, r := range plan.tail {
			if r.off < int64(len(img)) {
				t.Fatalf("tail region at %d is inside the image", r.off)
			}
			copy(out[r.off:], r.data)
		}
		path := writeFile(t, "disk.img", out)
		if v := run(t, "sgdisk", "-v", path); !strings.Contains(v, "No problems found") {
			t.Fatalf("grow=%v: sgdisk -v:\n%s", grow, v)
		}
		var pt struct {
			PartitionTable struct {
				LastLBA    int64 `json:"lastlba"`
				Partitions []struct{ Start, Size int64 }
			}
		}
		if err := json.Unmarshal([]byte(run(t, "sfdisk", "--json", path)), &pt); err != nil {
			t.Fatal(err)
		}
		last := pt.PartitionTable.Partitions[1]
		if pt.PartitionTable.LastLBA != disk/512-34 {
			t.Errorf("last usable LBA %d, want %d", pt.PartitionTable.LastLBA, disk/512-34)
		}
		if grown := last.Start+last.Size-1 == pt.PartitionTable.LastLBA; grown != grow {
			t.Errorf("grow=%v, but partition 2 ends at %d", grow, last.Start+last.Size-1)
		}
		if grow && plan.grown != 1 {
			t.Errorf("grown partition index %d, want 1", plan.grown)
		}
		// Read back with the patches undone gives the image again.
		back := bytes.Clone(out[:len(img)])
		if !applyPatches(back, 0, plan.patches) || !bytes.Equal(back, img) {
			t.Errorf("grow=%v: undoing the patches does not give the image back", grow)
		}
	}
}

func TestPlanGPTRefuses(t *testing.T) {
	img := gptImage(t)
	badCRC := bytes.Clone(img)
	badCRC[512+40] ^= 1
	badEntries := bytes.Clone(img)
	badEntries[1024+5] ^= 1
	tests := []struct {
		name  string
		head  []byte
		ss    int
		disk  int64
		want  string
		noGPT bool
	}{
		{name: "no GPT", head: make([]byte, HeadSize), ss: 512, disk: 16 << 20, noGPT: true},
		{name: "4K disk", head: img[:HeadSize], ss: 4096, disk: 16 << 20, want: "512-byte sectors"},
		{name: "header CRC", head: badCRC[:HeadSize], ss: 512, disk: 16 << 20, want: "checksum"},
		{name: "entries CRC", head: badEntries[:HeadSize], ss: 512, disk: 16 << 20, want: "entries checksum"},
		{name: "smaller disk", head: img[:HeadSize], ss: 512, disk: 4 << 20, want: "smaller"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := planGPT(tc.head, tc.disk, tc.ss, true)
			if tc.noGPT {
				if !errors.Is(err, errNoGPT) {
					t.Fatalf("error %v, want errNoGPT", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
