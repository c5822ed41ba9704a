package boot

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func loadTestAliases(t testing.TB) *AliasTable {
	t.Helper()
	f, err := os.Open("testdata/modules.alias")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := ParseAliases(f)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestAliasMatch(t *testing.T) {
	tab := loadTestAliases(t)
	if tab.Len() < 100 {
		t.Fatalf("only %d aliases parsed", tab.Len())
	}
	tests := []struct {
		name     string
		modalias string
		want     []string
	}{
		// Device modaliases as QEMU's devices show them in sysfs.
		{"e1000 NIC", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", []string{"e1000"}},
		{"virtio PCI transport", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []string{"virtio_pci"}},
		{"virtio net device", "virtio:d00000001v00001AF4", []string{"virtio_net"}},
		{"virtio block device", "virtio:d00000002v00001AF4", []string{"virtio_blk"}},
		{"virtio scsi device", "virtio:d00000008v00001AF4", []string{"virtio_scsi"}},
		{"qemu xhci by class", "pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30", []string{"xhci_pci"}},
		{"usb stick interface", "usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00", []string{"uas", "usb_storage"}},
		{"usb keyboard interface", "usb:v0627p0001d0000dc00dsc00dp00ic03isc01ip01in00", []string{"usbhid"}},
		{"scsi disk", "scsi:t-0x00", []string{"sd_mod"}},
		{"hid device", "hid:b0003g0001v00000627p00000001", []string{"hid_generic"}},
		{"trailing newline as read from sysfs", "virtio:d00000001v00001AF4\n", []string{"virtio_net"}},
		{"no driver", "acpi:PNP0A03:", nil},
		{"host bridge has none", "pci:v00008086d00001237sv00001AF4sd00001100bc06sc00i00", nil},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tab.Match(tt.modalias); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Match(%q) = %q, want %q", tt.modalias, got, tt.want)
			}
		})
	}
}

func TestParseAliasesSkipsJunk(t *testing.T) {
	in := "# comment\nalias pci:v1* good\nalias broken\nalias pci:[ bad\noptions x y z\nalias *:foo* anybus\n"
	tab, err := ParseAliases(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 2 {
		t.Errorf("Len = %d, want 2", tab.Len())
	}
	if got := tab.Match("pci:v1234"); !reflect.DeepEqual(got, []string{"good"}) {
		t.Errorf("Match = %q", got)
	}
	if got := tab.Match("usb:foo1"); !reflect.DeepEqual(got, []string{"anybus"}) {
		t.Errorf("Match = %q", got)
	}
}

func FuzzAliasMatch(f *testing.F) {
	tab := loadTestAliases(f)
	f.Add("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00")
	f.Add("virtio:d00000001v00001AF4")
	f.Add("[")
	f.Fuzz(func(t *testing.T, s string) {
		tab.Match(s)
		if _, err := ParseAliases(strings.NewReader("alias " + s + " m\n")); err != nil {
			t.Fatal(err)
		}
	})
}
