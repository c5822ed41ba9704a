package boot

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Console is the machine's console as the boot code uses it: lines out,
// lines in. Reading starts at the first question and goes on in the
// background until the input ends; that reader cannot be stopped, so use
// one Console per process.
type Console struct {
	out io.Writer
	in  io.Reader

	mu    sync.Mutex // serializes output
	once  sync.Once
	lines chan string // closed at the end of input
}

// NewConsole returns a console that writes to out and reads lines from in.
func NewConsole(in io.Reader, out io.Writer) *Console {
	return &Console{in: in, out: out, lines: make(chan string, 16)}
}

func (c *Console) startReader() {
	c.once.Do(func() {
		go func() {
			defer close(c.lines)
			sc := bufio.NewScanner(c.in)
			for sc.Scan() {
				c.lines <- sc.Text()
			}
		}()
	})
}

// Printf writes to the console.
func (c *Console) Printf(format string, a ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, format, a...)
}

// Writer returns the console's output.
func (c *Console) Writer() io.Writer { return lockedWriter{c} }

type lockedWriter struct{ c *Console }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	return w.c.out.Write(b)
}

// Ask shows prompt and returns the line typed, trimmed. It fails with
// io.EOF when the input has ended.
func (c *Console) Ask(ctx context.Context, prompt string) (string, error) {
	c.startReader()
	c.Printf("%s", prompt)
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case l, ok := <-c.lines:
		if !ok {
			return "", io.EOF
		}
		return strings.TrimSpace(l), nil
	}
}

// drain forgets lines typed earlier, so that an old Enter does not answer
// a new question.
func (c *Console) drain() {
	for {
		select {
		case _, ok := <-c.lines:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// WaitEnter waits d, or until Enter is pressed (true), or ctx ends.
func (c *Console) WaitEnter(ctx context.Context, d time.Duration) (bool, error) {
	c.startReader()
	c.drain()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-t.C:
		return false, nil
	case _, ok := <-c.lines:
		return ok, nil
	}
}

// Banner prints a framed block of lines, for screens a person must notice
// from across the room.
func (c *Console) Banner(title string, lines ...string) {
	const width = 72
	bar := strings.Repeat("=", width)
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n", bar)
	pad := max(0, (width-len(title)-2)/2)
	fmt.Fprintf(&b, "%s %s\n", strings.Repeat(" ", pad), title)
	fmt.Fprintf(&b, "%s\n", bar)
	for _, l := range lines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	fmt.Fprintf(&b, "%s\n", bar)
	c.Printf("%s", b.String())
}
