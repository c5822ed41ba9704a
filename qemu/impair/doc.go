// Package impair is an impairment switch for shoal's tests: it forwards
// Ethernet frames between two interfaces and, on the way, drops (at random,
// or in bursts after the Gilbert-Elliott two-state model), duplicates,
// reorders and delays them, because the lab's kernel has no tc netem.
//
// A Switch reads and writes both interfaces through AF_PACKET raw sockets
// (every protocol, promiscuous, its own writes ignored), so ARP, TCP,
// multicast and anything else pass through it; the rules apply to every
// frame or, with Rules.UDPOnly, to UDP only. Each direction has its own
// Rules and its own pseudo-random generator (PCG) derived from Config.Seed:
// the decisions taken for a direction depend only on the seed and the
// sequence of frames, so a failure replays with the same seed, which the
// switch logs.
//
// The sockets use PACKET_VNET_HDR, so frames whose checksum is left to
// offload (the norm on veth and tap devices) keep a valid checksum through
// the switch; a segmentation offload super-frame (up to 64 KiB of TCP from
// a device that has offload on) crosses it as one frame.
//
// Insert puts a Switch on one host's link in a lab (package lab): between
// the host and the bridge, so the rules act on what that host sends and
// receives; inserted on the sender's link they act on every receiver at
// once. InsertTap does the same for a tap (a VM's NIC). The impair command
// (cmd/impair) runs a Switch between any two interfaces, e.g. a QEMU tap
// taken off the bridge and a veth pair into it.
//
// A Switch forwarded about 140 000 frames per second in one direction on
// the lab's 2-core machine, with the sender on the same cores; beyond its
// pace the kernel drops frames before the switch reads them, and
// Counters.Overruns counts them (cap the sender's rate to avoid it).
package impair
