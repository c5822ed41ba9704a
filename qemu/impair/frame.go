package impair

import "encoding/binary"

// EtherTypes and IP protocol numbers isUDP looks at.
const (
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	ipProtoUDP     = 17
	ipv6HeaderSize = 40
)

// isUDP reports whether an Ethernet frame carries an IPv4 or IPv6 UDP
// datagram, behind up to two VLAN tags. IPv6 extension headers are followed
// (hop-by-hop, routing, fragment, destination options).
func isUDP(frame []byte) bool {
	if len(frame) < 14 {
		return false
	}
	off := 12
	et := binary.BigEndian.Uint16(frame[off:])
	for i := 0; i < 2 && (et == etherTypeVLAN || et == etherTypeQinQ); i++ {
		off += 4
		if len(frame) < off+2 {
			return false
		}
		et = binary.BigEndian.Uint16(frame[off:])
	}
	ip := frame[off+2:]
	switch et {
	case etherTypeIPv4:
		return len(ip) >= 20 && ip[0]>>4 == 4 && ip[9] == ipProtoUDP
	case etherTypeIPv6:
		if len(ip) < ipv6HeaderSize || ip[0]>>4 != 6 {
			return false
		}
		next, rest := ip[6], ip[ipv6HeaderSize:]
		for range 8 {
			switch next {
			case ipProtoUDP:
				return true
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 {
					return false
				}
				n := 8 + int(rest[1])*8
				if len(rest) < n {
					return false
				}
				next, rest = rest[0], rest[n:]
			case 44: // fragment
				if len(rest) < 8 {
					return false
				}
				next, rest = rest[0], rest[8:]
			default:
				return false
			}
		}
	}
	return false
}
