package imaging

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The fake sysfs in testdata/sysfs has: sda (the system disk, root
// mounted from sda2), sdb (a USB stick, a partition mounted), sdc
// (read-only), sdd (64 GiB), sde and sdf (2000 GiB each), sdg (a card
// reader with no medium), sdh (removable, 128 GiB), nvme0n1 (256 GiB, a
// partition held by dm-0), and loop0 (1 GiB), sr0, zram0, dm-0.
func TestSelectDisk(t *testing.T) {
	const gib = 1 << 30
	base := SelectOptions{SysRoot: "testdata/sysfs", MountInfo: "testdata/mountinfo"}
	tests := []struct {
		name    string
		size    int64
		opts    func(SelectOptions) SelectOptions
		chosen  string // "" means none
		reasons map[string]string
	}{
		{
			name: "default", size: 100 * gib, chosen: "sde",
			reasons: map[string]string{
				"sda":     "/ is mounted from it",
				"sdb":     "/mnt/usb stick is mounted from it",
				"sdc":     "read-only",
				"sdd":     "too small",
				"sde":     "chosen",
				"sdf":     "an earlier disk was chosen",
				"sdg":     "no medium",
				"sdh":     "removable",
				"nvme0n1": "in use by dm-0",
				"loop0":   "not a disk",
				"sr0":     "not a disk",
				"zram0":   "not a disk",
				"dm-0":    "not a disk",
			},
		},
		{
			name: "booted from a partition of the first fit", size: 100 * gib, chosen: "sdf",
			opts: func(o SelectOptions) SelectOptions {
				o.BootDevices = []string{"/dev/sde1", "sde"} // a path, as the kernel names it
				return o
			},
			reasons: map[string]string{"sde": "boot medium", "sdf": "chosen"},
		},
		{
			name: "nothing large enough", size: 3000 * gib,
			reasons: map[string]string{"sde": "too small", "sdf": "too small"},
		},
		{
			name: "removable allowed", size: 100 * gib, chosen: "sde",
			opts: func(o SelectOptions) SelectOptions {
				o.AllowRemovable = true
				return o
			},
			reasons: map[string]string{"sdh": "an earlier disk was chosen", "sdb": "mounted"},
		},
		{
			name: "virtual allowed", size: 1 * gib, chosen: "dm-0",
			opts: func(o SelectOptions) SelectOptions {
				o.IncludeVirtual = true
				return o
			},
			reasons: map[string]string{"loop0": "an earlier disk was chosen", "sr0": "removable", "zram0": "an earlier disk was chosen"},
		},
		{
			name: "no mountinfo", size: 100 * gib, chosen: "sda",
			opts: func(o SelectOptions) SelectOptions {
				o.MountInfo = "-"
				return o
			},
			reasons: map[string]string{"sdb": "removable or USB"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := base
			if tc.opts != nil {
				opts = tc.opts(opts)
			}
			chosen, cands, err := SelectDisk(tc.size, opts)
			for _, c := range cands {
				t.Log(c)
			}
			if tc.chosen == "" {
				if !errors.Is(err, ErrNoDisk) {
					t.Fatalf("error %v, want ErrNoDisk", err)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if chosen.Name != tc.chosen || chosen.Path != "/dev/"+tc.chosen || !chosen.Chosen {
				t.Fatalf("chose %+v, want %s", chosen, tc.chosen)
			}
			if len(cands) != 13 {
				t.Errorf("%d candidates, want all 13 block devices", len(cands))
			}
			byName := map[string]Candidate{}
			for _, c := range cands {
				byName[c.Name] = c
			}
			for name, want := range tc.reasons {
				if got := byName[name].Reason; !strings.Contains(got, want) {
					t.Errorf("%s: reason %q, want it to mention %q", name, got, want)
				}
			}
		})
	}
}

func TestSelectDiskDescribes(t *testing.T) {
	_, cands, err := SelectDisk(1<<30, SelectOptions{SysRoot: "testdata/sysfs", MountInfo: "testdata/mountinfo"})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(cands, func(c Candidate) bool { return c.Name == "sda" })
	if sda := cands[i]; sda.Model != "ATA Samsung SSD 870" || sda.Size != 500<<30 || sda.Removable || sda.USB {
		t.Errorf("sda described as %+v", sda)
	}
	i = slices.IndexFunc(cands, func(c Candidate) bool { return c.Name == "sdb" })
	if sdb := cands[i]; !sdb.USB || sdb.Removable {
		t.Errorf("sdb (USB, not flagged removable) described as %+v", sdb)
	}
	names := make([]string, len(cands))
	for i, c := range cands {
		names[i] = c.Name
	}
	want := []string{"dm-0", "loop0", "nvme0n1", "sda", "sdb", "sdc", "sdd", "sde", "sdf", "sdg", "sdh", "sr0", "zram0"}
	if !slices.Equal(names, want) {
		t.Errorf("order %v, want %v", names, want)
	}
}

func TestNaturalCompare(t *testing.T) {
	names := []string{"sdb", "nvme10n1", "sda", "loop10", "nvme2n1", "loop2", "sda10", "sda2"}
	slices.SortFunc(names, naturalCompare)
	want := []string{"loop2", "loop10", "nvme2n1", "nvme10n1", "sda", "sda2", "sda10", "sdb"}
	if !slices.Equal(names, want) {
		t.Fatalf("got %v, want %v", names, want)
	}
}

// TestSelectDiskBootPath builds a sysfs tree whose second disk holds the
// file system of the test's temporary directory: that disk is the boot
// medium and must be passed over.
func TestSelectDiskBootPath(t *testing.T) {
	var st unix.Stat_t
	dir := t.TempDir()
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	sys := t.TempDir()
	for name, dev := range map[string]string{
		"sda": "250:0",
		"sdb": fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev)),
	} {
		d := filepath.Join(sys, "block", name)
		for attr, v := range map[string]string{"size": "209715200", "removable": "0", "ro": "0", "dev": dev} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, attr), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	opts := SelectOptions{SysRoot: sys, MountInfo: "-", BootPaths: []string{dir}}
	chosen, cands, err := SelectDisk(1<<30, opts)
	if err != nil || chosen.Name != "sda" {
		t.Fatalf("chose %+v (%v), want sda", chosen, err)
	}
	if !strings.Contains(cands[1].Reason, "holds "+dir) {
		t.Errorf("sdb: %s", cands[1].Reason)
	}
}
