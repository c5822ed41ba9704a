package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-lab/shoal/internal/filehash"
)

// clientRecord is the part of a line of shoal serve's --log-clients the
// demo reads.
type clientRecord struct {
	Time   time.Time `json:"time"`
	MAC    string    `json:"mac"`
	Result string    `json:"result"`
}

// report checks every disk against the image, prints the time from the
// first power-on to the last verified disk and where the logs are, and
// tells whether everything went well.
func (d *demo) report(img image, f *fleet, srvErr error, total time.Duration) bool {
	ok := srvErr == nil
	d.say("the disks, read back on this machine:")
	for i, v := range f.vms {
		got, err := filehash.SHA256(f.disks[i], img.size)
		verdict := "MATCHES the image"
		switch {
		case err != nil:
			verdict, ok = err.Error(), false
		case got != img.sum:
			verdict, ok = "DIFFERS from the image", false
		}
		fmt.Fprintf(d.out, "   %s  %s  %s  sha256 %x…  %s\n", v.Name, v.MAC, f.disks[i], got[:6], verdict)
	}
	if last, n := lastVerified(filepath.Join(d.logs, clientLogName)); n > 0 {
		d.say("%d of %d machines imaged; first power-on to last disk verified: %s", n, len(f.vms), last.Sub(f.started).Round(100*time.Millisecond))
	}
	if srvErr != nil {
		d.say("shoal serve: %v", srvErr)
	}
	d.say("logs: VM serial consoles %s; server %s; per-client results %s; lab %s",
		filepath.Join(filepath.Dir(f.disks[0]), "pc*-serial.log"), filepath.Join(d.logs, serverLogName),
		filepath.Join(d.logs, clientLogName), filepath.Join(d.logs, "lab.log"))
	d.say("demo done in %s", total.Round(time.Second))
	return ok
}

// lastVerified reads the client log: when the last good client finished,
// and how many did.
func lastVerified(path string) (time.Time, int) {
	var last time.Time
	n := 0
	f, err := os.Open(path)
	if err != nil {
		return last, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r clientRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil || r.Result != "ok" {
			continue
		}
		n++
		if r.Time.After(last) {
			last = r.Time
		}
	}
	return last, n
}
