package client

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/shoal-lab/shoal/imaging"
)

// checker reads written chunks back from the disk and checks their SHA-256
// while the transfer goes on, so verifying the disk does not add a second
// pass at the end. It runs on its own goroutine.
type checker struct {
	c    *imaging.ChunkChecker
	m    *imaging.Manifest
	log  *slog.Logger
	q    chan int
	done chan struct{}
	read atomic.Int64 // bytes read back

	mu  sync.Mutex
	bad int   // the first chunk that read back wrong, or -1
	err error // a read error
}

func startChecker(ctx context.Context, t *imaging.Target, m *imaging.Manifest, log *slog.Logger) *checker {
	c := &checker{c: imaging.NewChunkChecker(t, m), m: m, log: log, q: make(chan int, len(m.Chunks)+1), done: make(chan struct{}), bad: -1}
	go c.loop(ctx)
	return c
}

func (c *checker) loop(ctx context.Context) {
	defer close(c.done)
	defer c.c.Close()
	for i := range c.q {
		if ctx.Err() != nil {
			continue
		}
		ok, err := c.c.Check(i)
		_, n := c.m.ChunkRange(i)
		c.read.Add(int64(n))
		c.mu.Lock()
		switch {
		case err != nil && c.err == nil:
			c.err = err
		case err == nil && !ok && (c.bad < 0 || i < c.bad):
			c.bad = i
			c.log.Error("a chunk read back from the disk differs from the image", "chunk", i)
		}
		c.mu.Unlock()
	}
}

// add queues chunk i, written to the disk, for checking.
func (c *checker) add(i int) { c.q <- i }

// finish waits until every queued chunk is checked and returns the first
// bad one (or -1) and any read error.
func (c *checker) finish() (int, error) {
	close(c.q)
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bad, c.err
}
