// Package lab builds private virtual LANs in network namespaces for shoal's
// tests and benchmarks.
//
// A Lab is one layer-2 segment: a "switch" namespace holding a Linux bridge
// (STP off, multicast snooping off, so every multicast packet is flooded to
// every port, like a dumb switch), plus one namespace per Host, joined to the
// bridge by a veth pair whose host end is "eth0". QEMU VMs join the same
// segment through tap devices made by AddTap in the switch namespace.
//
//	switch ns "shl<pid>-<start>-<n>-sw":  shlbr ─┬─ shv1-a ═══ eth0  (host ns "…-a", 10.x.y.1)
//	                                             ├─ shv2-b ═══ eth0  (host ns "…-b", 10.x.y.2)
//	                                             └─ sht3-vm  ◀── qemu -netdev tap,ifname=sht3-vm
//
// Links are shaped per host: SetLoss drops a random share of incoming UDP
// with nftables (the kernel has no netem), SetRate caps the egress rate with
// tc tbf, BlockUDPDest drops a multicast group the way an IGMP-snooping
// switch would.
//
// Safety rules the package keeps:
//
//   - Nothing is created, changed or sent in the root namespace: every
//     interface is made inside a lab namespace (ip -n, tc -n, ip netns exec).
//   - Every namespace name carries its owner's PID and process start time
//     ("shl<pid>-<start>-<n>-<role>"). Close removes a lab's namespaces, and
//     Sweep (called by New) removes those whose owner is gone, e.g. after a
//     killed test binary. Namespaces of live processes and namespaces that do
//     not follow the scheme are never touched.
//   - Close first SIGKILLs every process still inside the lab's namespaces.
//
// The package shells out to ip, nft and tc (iproute2 and nftables) and needs
// root; Available says whether the machine can run a lab. It works on Linux
// only.
package lab
