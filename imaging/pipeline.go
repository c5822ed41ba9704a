package imaging

import (
	"context"
	"runtime"
	"sync"
)

// runPipeline is the shape every whole-image pass here shares: produce
// reads item i in order on the calling goroutine, work transforms items on
// workers goroutines at once (w is the worker's number, for per-worker
// state), and consume takes the results in order on one more goroutine.
// At most depth items are between produce and consume (at least
// 2×workers); buffer pools bound the memory below that.
//
// produce returns ok=false when there is nothing more. The first error in
// item order from work or consume wins and cancels the ctx passed to
// produce (so a produce that waits for a free buffer must watch it); a
// produce error stops production, and is returned only if every item
// produced before it went through cleanly. runPipeline returns after all
// its goroutines have.
func runPipeline[In, Out any](ctx context.Context, workers, depth int,
	produce func(ctx context.Context, i int) (in In, ok bool, err error),
	work func(w, i int, in In) (Out, error),
	consume func(i int, in In, out Out) error,
) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if workers < 1 {
		workers = 1
	}
	type task struct {
		i    int
		in   In
		out  Out
		err  error
		done chan struct{}
	}
	jobs := make(chan *task)
	order := make(chan *task, max(depth, 2*workers))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for t := range jobs {
				t.out, t.err = work(w, t.i, t.in)
				close(t.done)
			}
		})
	}
	consumed := make(chan error, 1)
	go func() {
		var first error
		for t := range order {
			<-t.done
			if first != nil {
				continue
			}
			if t.err == nil {
				t.err = consume(t.i, t.in, t.out)
			}
			if t.err != nil {
				first = t.err
				cancel()
			}
		}
		consumed <- first
	}()

	var produceErr error
produce:
	for i := 0; ctx.Err() == nil; i++ {
		in, ok, err := produce(ctx, i)
		if err != nil {
			produceErr = err
			break
		}
		if !ok {
			break
		}
		t := &task{i: i, in: in, done: make(chan struct{})}
		select {
		case order <- t:
		case <-ctx.Done():
			break produce
		}
		select {
		case jobs <- t:
		case <-ctx.Done():
			t.err = ctx.Err()
			close(t.done)
			break produce
		}
	}
	close(jobs)
	close(order)
	wg.Wait()
	if err := <-consumed; err != nil && parent.Err() == nil {
		return err
	}
	if err := parent.Err(); err != nil {
		return err
	}
	return produceErr
}

// defaultWorkers is the worker count for a zero option: every core.
func defaultWorkers(n int) int {
	if n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// bufPool hands out reusable buffers of one size, at most a fixed number
// at a time, so a pipeline's memory stays bounded.
type bufPool struct {
	free chan []byte
}

// newBufPool makes count buffers of size bytes with alloc.
func newBufPool(count, size int, alloc func(int) []byte) *bufPool {
	p := &bufPool{free: make(chan []byte, count)}
	for range count {
		p.free <- alloc(size)
	}
	return p
}

// get waits for a free buffer, or for ctx's end.
func (p *bufPool) get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.free:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// put returns a buffer got from p.
func (p *bufPool) put(b []byte) { p.free <- b[:cap(b)] }
