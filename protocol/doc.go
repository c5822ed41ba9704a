// Package protocol is the wire protocol shoal's server and clients share:
// the packet types, their encoding and decoding, and the checksum every
// packet carries.
//
// The same framing is used on every path: UDP discovery (client broadcast,
// server unicast answer), the TCP control connection (join, manifest,
// progress, NACKs, report) and the UDP multicast data stream.
//
// # Packet layout
//
// All integers are big-endian.
//
//	offset size field
//	0      2    magic "SH" (0x53 0x48)
//	2      1    protocol version (Version)
//	3      1    packet type (Type)
//	4      1    flags (FlagRepair, …)
//	5      3    reserved, zero
//	8      8    session ID (0 before a client has joined)
//	16     4    body length n
//	20     n    body, whose layout depends on the type
//	20+n   4    CRC32C (Castagnoli) of bytes [0, 20+n)
//
// A decoder checks the magic, version, length and checksum before it looks
// at a body, rejects trailing or missing bytes, and never panics on any
// input: every decoder has a fuzz target.
//
// On a TCP connection packets follow each other with no extra framing: the
// header's body length says where the next one starts (see ReadMessage).
package protocol
