package lab

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

const (
	// nsPrefix starts the name of every namespace this package makes.
	nsPrefix = "shl"
	// netnsDir is where `ip netns` keeps its named namespaces.
	netnsDir = "/run/netns"
	// switchRole is the last part of a switch namespace's name.
	switchRole = "sw"
	// bridgeName is the bridge inside the switch namespace.
	bridgeName = "shlbr"
	// maxIfname is the longest Linux interface name (IFNAMSIZ-1).
	maxIfname = 15
	// maxName is the longest host or tap name accepted.
	maxName = 12
)

// labSeq numbers the labs (and Available probes) of this process so that
// parallel labs get distinct namespace names. It is the package's only
// mutable state: an atomic counter, never reset, that only makes names.
var labSeq atomic.Uint64

// owner identifies the process that owns a namespace: its PID and its start
// time (field 22 of /proc/<pid>/stat, in clock ticks since boot), so that a
// reused PID is not mistaken for the owner.
type owner struct {
	pid   int
	start uint64
}

// String renders the owner as it appears in namespace names: "<pid>-<start
// in base 36>".
func (o owner) String() string {
	return strconv.Itoa(o.pid) + "-" + strconv.FormatUint(o.start, 36)
}

// selfOwner returns the owner value of the running process.
func selfOwner() (owner, error) {
	o, _, err := readOwner(os.Getpid())
	return o, err
}

// readOwner reads the start time and state of process pid from /proc.
func readOwner(pid int) (owner, byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return owner{}, 0, fmt.Errorf("read process %d status: %w", pid, err)
	}
	// The command name in parentheses may hold spaces; fields after the last
	// ')' start at field 3 (state). starttime is field 22.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return owner{}, 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return owner{}, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return owner{}, 0, fmt.Errorf("parse /proc/%d/stat start time: %w", pid, err)
	}
	return owner{pid: pid, start: start}, f[0][0], nil
}

// alive reports whether the owner process still runs: its PID exists, is not
// a zombie, and started at the recorded time. When /proc cannot be read for
// another reason than a missing process, it answers true, so that a doubt
// never destroys someone else's namespace.
func (o owner) alive() bool {
	cur, state, err := readOwner(o.pid)
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	if state == 'Z' || state == 'X' {
		return false
	}
	return cur.start == o.start
}

// nsName returns the namespace name for role in lab number seq of o.
func nsName(o owner, seq uint64, role string) string {
	return fmt.Sprintf("%s%s-%d-%s", nsPrefix, o, seq, role)
}

// parseNSName returns the owner encoded in a lab namespace name, or false if
// name does not follow the "shl<pid>-<start36>-<seq>-<role>" scheme.
func parseNSName(name string) (owner, bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return owner{}, false
	}
	f := strings.SplitN(rest, "-", 4)
	if len(f) != 4 || f[3] == "" {
		return owner{}, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 0 || strconv.Itoa(pid) != f[0] {
		return owner{}, false
	}
	start, err := strconv.ParseUint(f[1], 36, 64)
	if err != nil {
		return owner{}, false
	}
	if _, err := strconv.ParseUint(f[2], 10, 64); err != nil {
		return owner{}, false
	}
	return owner{pid: pid, start: start}, true
}

// checkName validates a host or tap name: 1 to 12 characters of letters,
// digits, '_' and '-', starting with a letter or digit.
func checkName(name string) error {
	if name == "" || len(name) > maxName {
		return fmt.Errorf("name %q: want 1 to %d characters", name, maxName)
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("name %q: only letters, digits, '_' and '-' (not first) are allowed", name)
		}
	}
	return nil
}

// ifname builds an interface name "<kind><seq>-<name>" cut to 15 bytes. The
// sequence number is unique in the lab, so cut names stay unique.
func ifname(kind string, seq int, name string) string {
	s := fmt.Sprintf("%s%d-%s", kind, seq, name)
	if len(s) > maxIfname {
		s = s[:maxIfname]
	}
	return s
}
