package imaging

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// GPT layout (UEFI spec, chapter 5), all little-endian: a protective MBR
// at LBA 0, the primary header at LBA 1, its partition entry array after
// it, and a backup entry array and header at the disk's last sectors.
const (
	gptSignature     = "EFI PART"
	gptMinHeaderSize = 92
	gptMaxEntries    = 1 << 16
)

// errNoGPT means the image has no GPT to fix up.
var errNoGPT = errors.New("no GPT")

// gptHeader holds the fields of a GPT header that a move to a larger disk
// changes, on top of the header sector's bytes.
type gptHeader struct {
	sector     []byte // the whole header sector, as found
	size       uint32 // header size: the bytes the CRC covers
	myLBA      uint64
	altLBA     uint64
	lastUsable uint64
	entriesLBA uint64
	numEntries uint32
	entrySize  uint32
	entriesCRC uint32
}

// parseGPTHeader decodes and checks the GPT header in sector.
func parseGPTHeader(sector []byte) (gptHeader, error) {
	var h gptHeader
	if len(sector) < gptMinHeaderSize || string(sector[:8]) != gptSignature {
		return h, errNoGPT
	}
	le := binary.LittleEndian
	h.sector = sector
	h.size = le.Uint32(sector[12:])
	if h.size < gptMinHeaderSize || int(h.size) > len(sector) {
		return h, fmt.Errorf("GPT header size %d out of range", h.size)
	}
	if got, want := gptHeaderCRC(sector[:h.size]), le.Uint32(sector[16:]); got != want {
		return h, fmt.Errorf("GPT header checksum mismatch")
	}
	h.myLBA, h.altLBA = le.Uint64(sector[24:]), le.Uint64(sector[32:])
	h.lastUsable, h.entriesLBA = le.Uint64(sector[48:]), le.Uint64(sector[72:])
	h.numEntries, h.entrySize, h.entriesCRC = le.Uint32(sector[80:]), le.Uint32(sector[84:]), le.Uint32(sector[88:])
	if h.entrySize < 128 || h.entrySize%8 != 0 || h.entrySize > 4096 || h.numEntries == 0 || h.numEntries > gptMaxEntries {
		return h, fmt.Errorf("GPT has %d entries of %d bytes", h.numEntries, h.entrySize)
	}
	return h, nil
}

// gptHeaderCRC is the header's CRC32, computed with its CRC field zero.
func gptHeaderCRC(hdr []byte) uint32 {
	c := bytes.Clone(hdr)
	clear(c[16:20])
	return crc32.ChecksumIEEE(c)
}

// encode returns a header sector with h's fields and a fresh CRC.
func (h *gptHeader) encode() []byte {
	s := bytes.Clone(h.sector)
	le := binary.LittleEndian
	le.PutUint64(s[24:], h.myLBA)
	le.PutUint64(s[32:], h.altLBA)
	le.PutUint64(s[48:], h.lastUsable)
	le.PutUint64(s[72:], h.entriesLBA)
	le.PutUint32(s[88:], h.entriesCRC)
	le.PutUint32(s[16:], gptHeaderCRC(s[:h.size]))
	return s
}

// region is bytes the writer puts on the disk outside the image's range.
type region struct {
	off  int64
	data []byte
}

// gptPlan is what moving a GPT image to a larger disk takes.
type gptPlan struct {
	patches []patch  // inside the image: primary header, entries, protective MBR
	tail    []region // past the image: the backup entries and header
	// grown is the index of the partition that was extended to the new
	// last usable LBA, or -1.
	grown          int
	oldEnd, newEnd uint64 // the grown partition's last LBA, before and after
	lastUsable     uint64
}

// planGPT works out how to move the backup GPT of a disk image to the end
// of a disk of diskSize bytes (what `sgdisk -e` does) and, with grow, to
// extend the last partition to the new end. head holds the image's first
// bytes; the primary header and its entries must lie in it. It returns
// errNoGPT for an image without a GPT.
func planGPT(head []byte, diskSize int64, ss int, grow bool) (*gptPlan, error) {
	if len(head) < 2*ss {
		return nil, errNoGPT
	}
	h, err := parseGPTHeader(head[ss : 2*ss])
	if errors.Is(err, errNoGPT) {
		for _, other := range []int{512, 4096} {
			if other != ss && len(head) >= 2*other && string(head[other:other+8]) == gptSignature {
				return nil, fmt.Errorf("the image's GPT is for %d-byte sectors, the disk has %d-byte sectors", other, ss)
			}
		}
		return nil, errNoGPT
	}
	if err != nil {
		return nil, fmt.Errorf("the image's primary GPT: %w", err)
	}
	if h.myLBA != 1 {
		return nil, fmt.Errorf("the image's primary GPT header says it lives at LBA %d", h.myLBA)
	}
	tableBytes := int64(h.numEntries) * int64(h.entrySize)
	tableSectors := uint64((tableBytes + int64(ss) - 1) / int64(ss))
	tableOff := int64(h.entriesLBA) * int64(ss)
	if h.entriesLBA < 2 || h.entriesLBA > uint64(len(head)/ss) || tableOff+tableBytes > int64(len(head)) {
		return nil, fmt.Errorf("the image's GPT entries at LBA %d are not in its first %d bytes", h.entriesLBA, len(head))
	}
	entries := bytes.Clone(head[tableOff : tableOff+tableBytes])
	if crc32.ChecksumIEEE(entries) != h.entriesCRC {
		return nil, errors.New("the image's GPT entries checksum mismatch")
	}
	diskSectors := uint64(diskSize) / uint64(ss)
	lastLBA := diskSectors - 1
	backupTable := lastLBA - tableSectors
	lastUsable := backupTable - 1
	if diskSectors <= tableSectors+2 || lastUsable < h.lastUsable {
		return nil, fmt.Errorf("the disk (%d sectors) is smaller than the image's GPT says (last usable LBA %d)", diskSectors, h.lastUsable)
	}

	plan := &gptPlan{grown: -1, lastUsable: lastUsable}
	if grow {
		plan.grown, plan.oldEnd = lastPartition(entries, int(h.entrySize))
		if plan.grown >= 0 && plan.oldEnd < lastUsable {
			e := entries[plan.grown*int(h.entrySize):]
			binary.LittleEndian.PutUint64(e[40:], lastUsable)
			plan.newEnd = lastUsable
			plan.patches = append(plan.patches, patch{off: tableOff, orig: bytes.Clone(head[tableOff : tableOff+tableBytes]), want: entries})
		} else {
			plan.grown = -1
		}
	}
	h.altLBA, h.lastUsable, h.entriesCRC = lastLBA, lastUsable, crc32.ChecksumIEEE(entries)
	primary := h.encode()
	plan.patches = append(plan.patches, patch{off: int64(ss), orig: bytes.Clone(head[ss : 2*ss]), want: primary})
	backup := h
	backup.sector = primary
	backup.myLBA, backup.altLBA, backup.entriesLBA = lastLBA, 1, backupTable
	plan.tail = []region{
		{off: int64(backupTable) * int64(ss), data: entries},
		{off: int64(lastLBA) * int64(ss), data: backup.encode()},
	}
	if mbr, ok := protectiveMBR(head[:512], diskSectors); ok {
		plan.patches = append(plan.patches, patch{off: 0, orig: bytes.Clone(head[:512]), want: mbr})
	}
	return plan, nil
}

// lastPartition finds the used entry that ends last: its index and last
// LBA, or -1.
func lastPartition(entries []byte, size int) (int, uint64) {
	best, end := -1, uint64(0)
	for i := 0; (i+1)*size <= len(entries); i++ {
		e := entries[i*size : (i+1)*size]
		if isZero(e[:16]) { // unused: zero type GUID
			continue
		}
		if last := binary.LittleEndian.Uint64(e[40:]); best < 0 || last > end {
			best, end = i, last
		}
	}
	return best, end
}

// protectiveMBR returns LBA 0 with its protective 0xEE partition resized
// to cover a disk of diskSectors, if it is a pure protective MBR (one 0xEE
// entry from LBA 1, no other partitions) that does not cover it yet.
func protectiveMBR(lba0 []byte, diskSectors uint64) ([]byte, bool) {
	if lba0[510] != 0x55 || lba0[511] != 0xAA {
		return nil, false
	}
	le := binary.LittleEndian
	pmbr := -1
	for k := range 4 {
		e := lba0[446+16*k : 446+16*(k+1)]
		switch {
		case e[4] == 0xEE && le.Uint32(e[8:]) == 1:
			pmbr = k
		case e[4] != 0:
			return nil, false // a hybrid MBR: leave it as it is
		}
	}
	if pmbr < 0 {
		return nil, false
	}
	want := uint32(min(diskSectors-1, 0xFFFFFFFF))
	e := 446 + 16*pmbr
	if le.Uint32(lba0[e+12:]) == want {
		return nil, false
	}
	out := bytes.Clone(lba0)
	le.PutUint32(out[e+12:], want)
	return out, true
}
