package server

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
)

// GroupRange is an inclusive range of IPv4 multicast groups.
type GroupRange struct {
	First, Last netip.Addr
}

// DefaultGroups is the administratively scoped block the data group is
// picked from by default. 239.255.0.0/16 is left out: discovery lives there.
var DefaultGroups = GroupRange{First: netip.AddrFrom4([4]byte{239, 0, 0, 0}), Last: netip.AddrFrom4([4]byte{239, 254, 255, 255})}

// IsValid reports whether the range was set.
func (g GroupRange) IsValid() bool { return g.First.IsValid() && g.Last.IsValid() }

func (g GroupRange) String() string {
	if g.First == g.Last {
		return g.First.String()
	}
	return g.First.String() + "-" + g.Last.String()
}

// ParseGroupRange parses one group ("239.1.2.3"), a prefix
// ("239.192.0.0/16") or a range ("239.1.1.1-239.1.1.200").
func ParseGroupRange(s string) (GroupRange, error) {
	var g GroupRange
	switch {
	case strings.Contains(s, "/"):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return g, fmt.Errorf("group %q: %w", s, err)
		}
		p = p.Masked()
		first := p.Addr()
		if !first.Is4() {
			return g, fmt.Errorf("group %q is not IPv4", s)
		}
		v := binary.BigEndian.Uint32(first.AsSlice()) | (1<<(32-p.Bits()) - 1)
		g = GroupRange{First: first, Last: netip.AddrFrom4(u32ToAddr(v))}
	case strings.Contains(s, "-"):
		a, b, _ := strings.Cut(s, "-")
		first, err1 := netip.ParseAddr(strings.TrimSpace(a))
		last, err2 := netip.ParseAddr(strings.TrimSpace(b))
		if err1 != nil || err2 != nil {
			return g, fmt.Errorf("group range %q: want FIRST-LAST", s)
		}
		g = GroupRange{First: first, Last: last}
	default:
		a, err := netip.ParseAddr(s)
		if err != nil {
			return g, fmt.Errorf("group %q: %w", s, err)
		}
		g = GroupRange{First: a, Last: a}
	}
	if !g.First.Is4() || !g.Last.Is4() || !g.First.IsMulticast() || !g.Last.IsMulticast() {
		return GroupRange{}, fmt.Errorf("group %q: want IPv4 multicast addresses (224.0.0.0/4; 239.0.0.0/8 is for local use)", s)
	}
	if g.Last.Less(g.First) {
		return GroupRange{}, fmt.Errorf("group range %q ends before it starts", s)
	}
	return g, nil
}

func u32ToAddr(v uint32) [4]byte {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return a
}

// Pick returns a random group in the range, avoiding groups whose MAC
// address collides with 224.0.0.x (switches flood those to every port).
func (g GroupRange) Pick(r *rand.Rand) netip.Addr {
	lo := binary.BigEndian.Uint32(g.First.AsSlice())
	hi := binary.BigEndian.Uint32(g.Last.AsSlice())
	var v uint32
	for try := 0; try < 64; try++ {
		v = lo + uint32(r.Uint64N(uint64(hi-lo)+1))
		if v&0x7fffff >= 256 {
			break
		}
	}
	return netip.AddrFrom4(u32ToAddr(v))
}
