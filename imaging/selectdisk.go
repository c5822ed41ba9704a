package imaging

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SelectOptions tune SelectDisk. The zero value reads the running
// system.
type SelectOptions struct {
	// SysRoot is where sysfs is mounted; empty means /sys. Tests point it
	// at a fake tree.
	SysRoot string
	// DevDir is where device nodes live, for the paths in the result;
	// empty means /dev.
	DevDir string
	// MountInfo is the mountinfo file whose mounted block devices make
	// their disks ineligible (the root file system, a mounted boot
	// stick); empty means /proc/self/mountinfo, "-" skips it.
	MountInfo string
	// BootDevices are devices the system booted from, e.g. the USB stick
	// the initramfs was loaded from, by path (/dev/sdb, /dev/sdb1,
	// /dev/disk/by-label/…) or kernel name (sdb1): their disks are never
	// chosen.
	BootDevices []string
	// BootPaths are files or directories on the boot medium (the stick's
	// mount point, the settings file read at boot): the disks holding
	// them are never chosen.
	BootPaths []string
	// IncludeVirtual considers loop, ram, zram, optical (sr), device-mapper
	// (dm), nbd and floppy devices, which are skipped by default.
	IncludeVirtual bool
	// AllowRemovable considers removable and USB disks, which are skipped
	// by default.
	AllowRemovable bool
}

// Candidate is one block device SelectDisk looked at, and what it thought.
type Candidate struct {
	Name      string // kernel name: sda, nvme0n1
	Path      string // device node: /dev/sda
	Model     string
	Size      int64 // bytes
	Removable bool
	USB       bool
	ReadOnly  bool
	Chosen    bool
	// Reason says why the disk was or was not chosen.
	Reason string
}

func (c Candidate) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s", c.Path, HumanBytes(c.Size))
	if c.Model != "" {
		fmt.Fprintf(&b, ", %s", c.Model)
	}
	if c.Removable {
		b.WriteString(", removable")
	}
	if c.USB {
		b.WriteString(", USB")
	}
	fmt.Fprintf(&b, "): %s", c.Reason)
	return b.String()
}

// ErrNoDisk means SelectDisk found no disk it may write.
var ErrNoDisk = errors.New("no suitable disk")

// virtualPrefixes name the kinds of block devices that are not disks.
var virtualPrefixes = []string{"loop", "ram", "zram", "sr", "dm-", "nbd", "fd"}

// SelectDisk picks the disk to image for --disk auto: the first (in
// natural name order) non-removable, writable disk at least imageSize
// bytes large that is not in use — none of its partitions mounted or
// held by device-mapper/md — and is not the medium the system booted
// from. It returns every candidate it saw with the reason it was or was
// not chosen, so the client can print them. The error wraps ErrNoDisk if
// none qualifies.
func SelectDisk(imageSize int64, opts SelectOptions) (Candidate, []Candidate, error) {
	sys := orDefault(opts.SysRoot, "/sys")
	dev := orDefault(opts.DevDir, "/dev")
	entries, err := os.ReadDir(filepath.Join(sys, "block"))
	if err != nil {
		return Candidate{}, nil, fmt.Errorf("select disk: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.SortFunc(names, naturalCompare)

	inUse, err := mountedDisks(sys, opts.MountInfo)
	if err != nil {
		return Candidate{}, nil, err
	}
	for _, b := range opts.BootDevices {
		if d := diskOf(sys, b); d != "" {
			inUse[d] = fmt.Sprintf("the boot medium (%s)", b)
		}
	}
	if len(opts.BootPaths) > 0 {
		byDev := devNumbers(sys)
		for _, p := range opts.BootPaths {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				return Candidate{}, nil, fmt.Errorf("select disk: boot path: %w", err)
			}
			if d := byDev[fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))]; d != "" {
				inUse[d] = fmt.Sprintf("the boot medium (it holds %s)", p)
			}
		}
	}

	var chosen *Candidate
	cands := make([]Candidate, 0, len(names))
	for _, name := range names {
		c := describeDisk(sys, dev, name)
		switch {
		case !opts.IncludeVirtual && isVirtual(name):
			c.Reason = "skipped: not a disk (virtual or optical device)"
		case c.Size == 0:
			c.Reason = "skipped: no medium"
		case c.ReadOnly:
			c.Reason = "skipped: read-only"
		case inUse[name] != "":
			c.Reason = "never chosen: " + inUse[name]
		case heldBy(sys, name) != "":
			c.Reason = "never chosen: in use by " + heldBy(sys, name)
		case (c.Removable || c.USB) && !opts.AllowRemovable:
			c.Reason = "skipped: removable or USB (allow removable disks to use it)"
		case c.Size < imageSize:
			c.Reason = fmt.Sprintf("too small: the image needs %s", HumanBytes(imageSize))
		case chosen != nil:
			c.Reason = "suitable, but an earlier disk was chosen"
		default:
			c.Chosen = true
			c.Reason = "chosen: the first fixed disk large enough for the image"
		}
		cands = append(cands, c)
		if c.Chosen {
			chosen = &cands[len(cands)-1]
		}
	}
	if chosen == nil {
		var why []string
		for _, c := range cands {
			why = append(why, c.String())
		}
		if len(why) == 0 {
			why = []string{"no block devices at all"}
		}
		return Candidate{}, cands, fmt.Errorf("%w for a %s image: %s", ErrNoDisk, HumanBytes(imageSize), strings.Join(why, "; "))
	}
	return *chosen, cands, nil
}

// orDefault returns v, or def if v is empty.
func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func isVirtual(name string) bool {
	for _, p := range virtualPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// describeDisk reads what sysfs says about a disk.
func describeDisk(sys, dev, name string) Candidate {
	dir := filepath.Join(sys, "block", name)
	c := Candidate{Name: name, Path: filepath.Join(dev, name)}
	if sectors, err := strconv.ParseInt(readAttr(dir, "size"), 10, 64); err == nil {
		c.Size = sectors * 512 // sysfs counts 512-byte sectors, whatever the disk's
	}
	c.Removable = readAttr(dir, "removable") == "1"
	c.ReadOnly = readAttr(dir, "ro") == "1"
	c.Model = strings.Join(strings.Fields(readAttr(dir, "device/vendor")+" "+readAttr(dir, "device/model")), " ")
	if link, err := os.Readlink(dir); err == nil && strings.Contains(link, "/usb") {
		c.USB = true
	}
	return c
}

// readAttr reads a sysfs attribute, trimmed; "" if it is missing.
func readAttr(dir, attr string) string {
	b, err := os.ReadFile(filepath.Join(dir, attr))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// heldBy names a device-mapper or md device built on the disk or one of
// its partitions, or "".
func heldBy(sys, disk string) string {
	dirs := []string{filepath.Join(sys, "block", disk)}
	for _, p := range partitions(sys, disk) {
		dirs = append(dirs, filepath.Join(sys, "block", disk, p))
	}
	for _, d := range dirs {
		if hs, err := os.ReadDir(filepath.Join(d, "holders")); err == nil && len(hs) > 0 {
			return hs[0].Name()
		}
	}
	return ""
}

// partitions lists a disk's partitions: its subdirectories with a
// "partition" attribute.
func partitions(sys, disk string) []string {
	entries, err := os.ReadDir(filepath.Join(sys, "block", disk))
	if err != nil {
		return nil
	}
	var parts []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(sys, "block", disk, e.Name(), "partition")); err == nil {
			parts = append(parts, e.Name())
		}
	}
	return parts
}

// diskOf maps a device path or kernel name (a disk or a partition) to its
// disk's kernel name, or "" if sysfs does not know it.
func diskOf(sys, device string) string {
	name := device
	if strings.Contains(device, "/") {
		if real, err := filepath.EvalSymlinks(device); err == nil {
			device = real
		}
		name = filepath.Base(device)
	}
	if _, err := os.Stat(filepath.Join(sys, "block", name)); err == nil {
		return name
	}
	disks, _ := os.ReadDir(filepath.Join(sys, "block"))
	for _, d := range disks {
		if slices.Contains(partitions(sys, d.Name()), name) {
			return d.Name()
		}
	}
	return ""
}

// mountedDisks maps each disk holding a mounted file system to a reason,
// from mountinfo's major:minor numbers matched against sysfs "dev"
// attributes.
func mountedDisks(sys, mountinfo string) (map[string]string, error) {
	inUse := map[string]string{}
	if mountinfo == "-" {
		return inUse, nil
	}
	f, err := os.Open(orDefault(mountinfo, "/proc/self/mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("select disk: mounted file systems: %w", err)
	}
	defer f.Close()
	byDev := devNumbers(sys)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options … - fstype source …
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || strings.HasPrefix(fields[2], "0:") {
			continue
		}
		if disk := byDev[fields[2]]; disk != "" && inUse[disk] == "" {
			inUse[disk] = fmt.Sprintf("in use: %s is mounted from it", unescapeMount(fields[4]))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("select disk: read mountinfo: %w", err)
	}
	return inUse, nil
}

// devNumbers maps "major:minor" of every disk and partition to the disk.
func devNumbers(sys string) map[string]string {
	out := map[string]string{}
	disks, _ := os.ReadDir(filepath.Join(sys, "block"))
	for _, d := range disks {
		dir := filepath.Join(sys, "block", d.Name())
		if n := readAttr(dir, "dev"); n != "" {
			out[n] = d.Name()
		}
		for _, p := range partitions(sys, d.Name()) {
			if n := readAttr(filepath.Join(dir, p), "dev"); n != "" {
				out[n] = d.Name()
			}
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// naturalCompare orders names with their digit runs compared as numbers:
// sda < sdb, nvme2n1 < nvme10n1, loop2 < loop10.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		ad, bd := isDigit(a[0]), isDigit(b[0])
		if ad != bd {
			return strings.Compare(a, b)
		}
		ra, rb := leadingRun(a, ad), leadingRun(b, bd)
		if ad {
			na, _ := strconv.ParseUint(ra, 10, 64)
			nb, _ := strconv.ParseUint(rb, 10, 64)
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
		} else if c := strings.Compare(ra, rb); c != 0 {
			return c
		}
		a, b = a[len(ra):], b[len(rb):]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// leadingRun is the leading run of a that is all digits (digits) or none.
func leadingRun(a string, digits bool) string {
	i := 0
	for i < len(a) && isDigit(a[i]) == digits {
		i++
	}
	return a[:i]
}
