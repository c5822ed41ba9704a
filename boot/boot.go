package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-lab/shoal/client"
	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/ctxtime"
)

// Options wire Run to the machine. The zero value of each optional field
// means the documented default.
type Options struct {
	// Stdin and Stdout are the console (required).
	Stdin  io.Reader
	Stdout io.Writer
	// Cmdline is the kernel command line; empty reads /proc/cmdline.
	Cmdline string
	// Status, if set, shows the client's progress (the client's console
	// display).
	Status func(client.Status)
	// RunSession runs one imaging session (client.Run).
	RunSession func(context.Context, client.Config) (*client.Result, error)
	// Power carries out the final reboot or power-off (PowerAction).
	Power func(After) error
	// Root is the file system root for /sys, /dev and /proc ("/"); tests
	// point it elsewhere.
	Root string
	// MountDir is where FAT partitions are mounted to look for the
	// settings file (/run/shoal).
	MountDir string
	// Backoff is the wait before the first retry after a failure (5 s); it
	// doubles up to a minute.
	Backoff time.Duration
	// EndDelay is how long the result stays on screen before the reboot
	// or power-off, when Enter gives a shell instead (5 s).
	EndDelay time.Duration
}

// Run is the client's life as the initramfs uinit: settings, drivers,
// disk, network, session, retries, and the final action. It returns nil
// when the machine should drop to u-root's shell (shoal.after=shell, or
// asked for at the console), and otherwise does not return unless the
// reboot or power-off fails.
func Run(ctx context.Context, o Options) error {
	if o.RunSession == nil {
		o.RunSession = client.Run
	}
	if o.Power == nil {
		o.Power = PowerAction
	}
	if o.Root == "" {
		o.Root = "/"
	}
	if o.MountDir == "" {
		o.MountDir = "/run/shoal"
	}
	if o.Backoff == 0 {
		o.Backoff = 5 * time.Second
	}
	if o.EndDelay == 0 {
		o.EndDelay = 5 * time.Second
	}
	con := NewConsole(o.Stdin, o.Stdout)
	r := &runner{o: o, con: con}
	return r.run(ctx)
}

type runner struct {
	o        Options
	con      *Console
	log      *slog.Logger
	level    *slog.LevelVar
	s        Settings
	cold     *Coldplug
	bootDisk string
	net      *NetInfo
}

func (r *runner) say(format string, a ...any) {
	r.con.Printf("shoal: "+format+"\n", a...)
}

func (r *runner) run(ctx context.Context) error {
	r.level = new(slog.LevelVar)
	r.log = slog.New(slog.NewTextHandler(r.con.Writer(), &slog.HandlerOptions{Level: r.level}))
	rel, _ := KernelRelease()
	r.say("shoal client starting (kernel %s)", rel)

	cmdline := r.o.Cmdline
	if cmdline == "" {
		b, err := os.ReadFile(filepath.Join(r.o.Root, "proc/cmdline"))
		if err != nil {
			r.say("cannot read the kernel command line: %v", err)
		}
		cmdline = string(b)
	}
	cmdPairs := CmdlinePairs(cmdline)
	r.s = DefaultSettings()
	for _, w := range r.s.Apply(cmdPairs) {
		r.say("warning: kernel command line: %s", w)
	}
	r.setDebug()
	// Before anything can draw a DHCP transaction ID (notes/boot.md).
	os.Setenv("UROOT_NOHWRNG", "1")

	r.coldplug(ctx)
	r.readStick(cmdPairs)

	for attempt := 1; ; attempt++ {
		res, err := r.attempt(ctx)
		if err == nil {
			return r.finish(ctx, res)
		}
		if errors.Is(err, errShell) || isEOF(err) {
			if isEOF(err) {
				r.say("no console input to answer with: dropping to a shell")
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errRescan) {
			r.cold.Run(ctx, time.Second)
			attempt--
			continue
		}
		wait := min(r.o.Backoff<<min(attempt-1, 4), time.Minute)
		lines := []string{
			fmt.Sprintf("session %q, disk %s, attempt %d", r.s.Session, orNone(r.s.Disk), attempt),
			"",
		}
		lines = append(lines, wrap("error: "+err.Error(), 68)...)
		lines = append(lines, "", hint(err))
		if r.s.After == AfterShell {
			r.con.Banner("SHOAL: IMAGING FAILED", append(lines, "", "shoal.after=shell: dropping to a shell.")...)
			return nil
		}
		r.con.Banner("SHOAL: IMAGING FAILED", append(lines, "", fmt.Sprintf("Retrying in %s. Press Enter for a shell.", wait))...)
		pressed, err := r.con.WaitEnter(ctx, wait)
		if err != nil {
			return err
		}
		if pressed {
			r.say("dropping to a shell; run shoal-client -uinit to start again")
			return nil
		}
	}
}

func (r *runner) setDebug() {
	if r.s.Debug {
		r.level.Set(slog.LevelDebug)
	} else {
		r.level.Set(slog.LevelInfo)
	}
}

// coldplug loads the drivers for the machine's devices.
func (r *runner) coldplug(ctx context.Context) {
	dir, aliases, loader, err := OpenModules()
	if err != nil {
		r.say("warning: %v; only built-in drivers are available", err)
		aliases, loader = &AliasTable{}, noLoader{}
	}
	r.cold = &Coldplug{Root: r.o.Root, Aliases: aliases, Loader: loader, Logger: r.log}
	start := time.Now()
	loaded, err := r.cold.Run(ctx, 1500*time.Millisecond)
	if err != nil {
		r.say("warning: driver coldplug: %v", err)
	}
	r.say("loaded %d drivers in %s from %s: %s", len(loaded), time.Since(start).Round(100*time.Millisecond), dir, strings.Join(loaded, " "))
	// The settings file's FAT file system needs these; the kernel would
	// ask a modprobe that u-root does not have.
	for _, m := range []string{"vfat", "nls_cp437", "nls_ascii", "nls_utf8", "nls_iso8859_1"} {
		if err := loader.Load(m); err != nil {
			r.log.Debug("module not loaded", "module", m, "err", err)
		}
	}
}

type noLoader struct{}

func (noLoader) Load(name string) error { return fmt.Errorf("no modules in the image: %s", name) }

// readStick reads the settings file from the boot stick, if any, and
// merges the command line over it.
func (r *runner) readStick(cmdPairs []Pair) {
	if strings.EqualFold(r.s.SettingsFile, "off") {
		return
	}
	st, err := FindStick(r.o.Root, r.o.MountDir, r.s.SettingsFile, r.log)
	if err != nil {
		r.say("warning: looking for the settings file: %v", err)
		return
	}
	if st == nil {
		return
	}
	r.bootDisk = st.Disk
	if st.File == "" {
		r.say("boot medium /dev/%s (label %s) has no %s", st.Disk, st.Label, r.s.SettingsFile)
		return
	}
	r.say("settings from %s on /dev/%s (the boot medium, never written)", st.File, st.Partition)
	for _, w := range st.Warnings {
		r.say("warning: %s: %s", st.File, w)
	}
	s := DefaultSettings()
	for _, w := range s.Apply(st.Pairs) {
		r.say("warning: %s: %s", st.File, w)
	}
	s.Apply(cmdPairs) // the command line wins; its warnings were shown
	r.s = s
	r.setDebug()
}

// attempt chooses the disk, brings the network up and runs one session.
func (r *runner) attempt(ctx context.Context) (*client.Result, error) {
	if err := r.chooseDisk(ctx); err != nil {
		return nil, err
	}
	if r.s.Session == "" {
		name, err := r.con.Ask(ctx, "Session name to join: ")
		if err != nil {
			return nil, err
		}
		if name == "" {
			return nil, errors.New("no session name given")
		}
		r.s.Session = name
	}
	if r.net == nil {
		info, err := BringUp(ctx, NetConfig{
			Iface: r.s.Iface, Static: r.s.Static, Gateway: r.s.Gateway,
			Logger: r.log, Say: func(m string) { r.say("%s", m) },
		})
		if err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		r.net = &info
		r.say("network up: %s", info)
		// For as long as the client runs, retries included: an image
		// can take longer than the lease.
		go KeepLease(ctx, info, r.log, func(m string) { r.say("%s", m) })
	}
	cfg := client.Config{
		Session:      r.s.Session,
		Disk:         r.s.Disk,
		Server:       r.s.Server,
		Interface:    r.net.Iface,
		BufferChunks: r.s.Buffer,
		SkipZeros:    r.s.Zero == "skip",
		NoVerify:     !r.s.Verify,
		Key:          r.s.Key,
		Logger:       r.log,
		Status:       r.o.Status,
	}
	if r.bootDisk != "" {
		cfg.BootDevices = []string{"/dev/" + r.bootDisk}
	}
	r.say("joining session %q to write %s", cfg.Session, cfg.Disk)
	return r.o.RunSession(ctx, cfg)
}

// chooseDisk settles r.s.Disk on a device path, asking when it is empty,
// and refuses the boot medium.
func (r *runner) chooseDisk(ctx context.Context) error {
	switch r.s.Disk {
	case "":
		disks, err := ListDisks(r.o.Root)
		if err != nil {
			return err
		}
		d, err := AskDisk(ctx, r.con, disks, r.bootDisk, r.s.Session)
		if err != nil {
			return err
		}
		r.s.Disk = d.Path
	case DiskAuto:
		opts := imaging.SelectOptions{SysRoot: filepath.Join(r.o.Root, "sys")}
		if r.bootDisk != "" {
			opts.BootDevices = []string{r.bootDisk}
		}
		// The image's size is not known before the session: the client
		// refuses a disk that is too small when it joins.
		d, all, err := imaging.SelectDisk(0, opts)
		for _, c := range all {
			r.log.Debug("disk candidate", "disk", c.String())
		}
		if err != nil {
			return fmt.Errorf("shoal.disk=auto: %w", err)
		}
		r.say("shoal.disk=auto chose %s", d)
		r.s.Disk = d.Path
	default:
		if err := r.waitForDevice(ctx, r.s.Disk, 30*time.Second); err != nil {
			return err
		}
	}
	return CheckTarget(r.o.Root, r.s.Disk, r.bootDisk)
}

// waitForDevice waits for a device node, loading drivers meanwhile: disks
// behind USB or slow controllers show up late.
func (r *runner) waitForDevice(ctx context.Context, path string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(filepath.Join(r.o.Root, path)); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			disks, _ := ListDisks(r.o.Root)
			return fmt.Errorf("%w: %s does not exist after %s (disks: %s)", ErrNoDisk, path, d, diskNames(disks))
		}
		r.cold.Pass()
		if err := ctxtime.Sleep(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

// finish shows the result and does what shoal.after says.
func (r *runner) finish(ctx context.Context, res *client.Result) error {
	lines := []string{fmt.Sprintf("session %q: %s written and verified", r.s.Session, r.s.Disk)}
	if res != nil {
		lines = append(lines, fmt.Sprintf("%d bytes, SHA-256 %x", res.Bytes, res.SHA256),
			fmt.Sprintf("in %s, %d packets lost and repaired", res.Elapsed.Round(10*time.Millisecond), res.Stats.Lost))
	}
	r.con.Banner("SHOAL: DONE", lines...)
	if r.s.After == AfterShell {
		r.say("shoal.after=shell: dropping to a shell")
		return nil
	}
	r.say("%s in %s; press Enter for a shell instead", r.s.After, r.o.EndDelay)
	pressed, err := r.con.WaitEnter(ctx, r.o.EndDelay)
	if err != nil {
		return err
	}
	if pressed {
		return nil
	}
	r.say("%s now", r.s.After)
	return r.o.Power(r.s.After)
}

// hint says what to check for a failure, for a person at the console.
func hint(err error) string {
	switch {
	case errors.Is(err, ErrNoLink):
		return "Check the network cable and the switch port."
	case errors.Is(err, ErrNoLease):
		return "No DHCP server answered: is one running on this network (shoal serve --dhcp)?"
	case errors.Is(err, ErrBootMedium), errors.Is(err, ErrNoDisk), errors.Is(err, imaging.ErrNoDisk):
		return "Check shoal.disk= (kernel command line or the stick's settings file)."
	case errors.Is(err, client.ErrRefused):
		return "The server refused this machine; see the reason above."
	case errors.Is(err, client.ErrServerGone):
		return "The server stopped answering: is it still running?"
	}
	return "See the messages above."
}

func orNone(s string) string {
	if s == "" {
		return "(not chosen)"
	}
	return s
}

// wrap breaks s into lines of at most width bytes at spaces.
func wrap(s string, width int) []string {
	var out []string
	for len(s) > width {
		i := strings.LastIndex(s[:width], " ")
		if i <= 0 {
			i = width
		}
		out = append(out, s[:i])
		s = strings.TrimLeft(s[i:], " ")
	}
	return append(out, s)
}
