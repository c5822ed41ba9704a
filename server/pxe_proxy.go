package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// PXEBootServerPort is the PXE boot server port (4011), where a client
// that took a proxyDHCP offer asks again for its boot file.
const PXEBootServerPort = 4011

// proxyDHCP answers PXE clients beside the LAN's own DHCP server (PXE
// spec 2.1, "proxyDHCP"): boot information only, never an address, and
// only to clients whose vendor class is PXEClient. On port 67 it answers
// DHCPDISCOVER with an offer without an address; on port 4011 it answers
// the client's DHCPREQUEST with the same boot information in an ack.
type proxyDHCP struct {
	log    *slog.Logger
	self   netip.Addr
	booter *pxeBooter
}

// handle answers one request that came to port (67 or 4011) from peer;
// it returns nil when there is nothing to say.
func (p *proxyDHCP) handle(req *dhcpv4.DHCPv4, port int, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil, nil
	}
	r := parsePXERequest(req)
	typ := req.MessageType()
	if !r.PXE {
		p.log.Debug("proxyDHCP: not a PXE client, ignored", "mac", req.ClientHWAddr.String(), "type", typ, "vendor", req.ClassIdentifier())
		return nil, nil
	}
	var reply dhcpv4.MessageType
	switch {
	case port == dhcpv4.ServerPort && typ == dhcpv4.MessageTypeDiscover:
		reply = dhcpv4.MessageTypeOffer
	case port == PXEBootServerPort && (typ == dhcpv4.MessageTypeRequest || typ == dhcpv4.MessageTypeInform):
		reply = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	ans, ok := p.booter.decide(r)
	if !ok {
		p.log.Info("proxyDHCP: no boot file for this client", "mac", r.MAC.String(), "why", ans.Why)
		return nil, nil
	}
	level := slog.LevelInfo
	if reply == dhcpv4.MessageTypeAck {
		level = slog.LevelDebug // the offer said it already
	}
	p.log.Log(context.Background(), level, "PXE: proxyDHCP boot file", "mac", r.MAC.String(), "firmware", r.Firmware, "ipxe", r.IPXE, "file", ans.File, "why", ans.Why)

	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(reply),
		dhcpv4.WithServerIP(p.self.AsSlice()),
		dhcpv4.WithClientIP(req.ClientIPAddr),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(p.self.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionClientMachineIdentifier),
		withBootFile(ans.File),
	}
	if r.Firmware == fwBIOS && !r.IPXE {
		// PXE discovery control (vendor option 6) = 8: skip boot server
		// discovery, boot the file named here.
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{6, 1, 8, 255}))
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		p.log.Warn("proxyDHCP: build reply", "err", err)
		return nil, nil
	}
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	switch {
	case port == PXEBootServerPort && peer != nil:
		dest = peer // the client has its address by now
	case ip4(req.GatewayIPAddr).IsValid():
		dest = &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	}
	return resp, dest
}

// withBootFile sets the boot file name field of a reply.
func withBootFile(name string) dhcpv4.Modifier {
	return func(d *dhcpv4.DHCPv4) { d.BootFileName = name }
}

// serveDHCPConn reads DHCP requests from conn and writes what handle
// answers, until ctx ends or conn is closed (done is closed first); it
// then returns nil.
func serveDHCPConn(ctx context.Context, conn net.PacketConn, done <-chan struct{}, log *slog.Logger,
	handle func(req *dhcpv4.DHCPv4, peer *net.UDPAddr) (*dhcpv4.DHCPv4, *net.UDPAddr)) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-done:
				return nil
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("read %s: %w", conn.LocalAddr(), err)
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			log.Debug("dhcp: bad packet", "from", from, "err", err)
			continue
		}
		peer, _ := from.(*net.UDPAddr)
		log.Debug("dhcp: request", "on", conn.LocalAddr(), "from", from, "type", req.MessageType(), "mac", req.ClientHWAddr.String(), "vendor", req.ClassIdentifier())
		resp, dest := handle(req, peer)
		if resp == nil {
			continue
		}
		if _, err := conn.WriteTo(resp.ToBytes(), dest); err != nil {
			log.Warn("dhcp: send failed", "to", dest, "type", resp.MessageType(), "err", err)
		} else {
			log.Debug("dhcp: reply", "to", dest, "type", resp.MessageType(), "file", resp.BootFileName)
		}
	}
}
