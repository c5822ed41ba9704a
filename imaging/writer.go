package imaging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
)

// HeadSize is how much of the disk's start the Writer keeps blank until
// everything else is written: the first MiB holds the MBR, the primary GPT
// header and entries, and the boot loader's embedding area, so a disk
// whose head is blank boots as nothing at all.
const HeadSize = 1 << 20

// WriterOptions tune a Writer.
type WriterOptions struct {
	// SkipZeros leaves zero chunks alone instead of zeroing them: for a
	// disk known to be blank (--zero=skip). The head is wiped regardless.
	SkipZeros bool
	// Grow extends the last partition of a GPT image to the end of a
	// larger disk (the file system in it is not grown).
	Grow bool
	// NoDirect writes through the page cache even where O_DIRECT works.
	NoDirect bool
	// Logger receives what the writer decides; nil discards it.
	Logger *slog.Logger
}

// Writer puts a verified image on a Target so that a disk is either
// completely imaged or visibly not imaged at all:
//
//   - Begin wipes the disk's first MiB (and a stale backup GPT at the end
//     of a larger whole disk) before anything else is written;
//   - WriteChunk writes chunks in any order, with large aligned O_DIRECT
//     writes where the target allows it, but keeps the chunks of the first
//     MiB in memory;
//   - Finish writes those last, after everything else is on stable
//     storage, moves a GPT's backup to the end of a larger disk, and makes
//     the kernel re-read the partition table.
//
// A session that fails before Finish leaves the first MiB zero: no MBR, no
// GPT, nothing a firmware would boot. The Writer only ever touches the
// image's range [0, image size) of the target, except, on a whole disk
// larger than the image, its last sectors (the backup GPT). A Writer is not
// safe for concurrent use.
type Writer struct {
	t      *Target
	m      *Manifest
	opts   WriterOptions
	log    *slog.Logger
	direct *directIO

	head       []byte // the image's first chunks, written by Finish
	headChunks int    // chunks [0, headChunks) are in head
	done       []bool
	remaining  int

	patches []patch  // fix-ups inside the image's range
	tail    []region // what Finish wrote past the image's range

	begun, finished, closed bool
}

// NewWriter prepares to write the image m describes to t. It refuses a
// target smaller than the image (ErrTooSmall) before anything is written.
func NewWriter(t *Target, m *Manifest, opts WriterOptions) (*Writer, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := t.CheckFits(m.ImageSize); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	headEnd := min(HeadSize, m.ImageSize)
	headChunks := int((headEnd-1)/int64(m.ChunkSize)) + 1
	off, n := m.ChunkRange(headChunks - 1)
	return &Writer{
		t: t, m: m, opts: opts, log: log,
		head: make([]byte, off+int64(n)), headChunks: headChunks,
		done: make([]bool, len(m.Chunks)), remaining: len(m.Chunks),
	}, nil
}

// Begin readies the target and marks it not imaged before anything else
// is written: a file target is sized to the image, the first MiB is
// zeroed, and on a whole disk larger than the image a backup GPT header in
// its last sector (left by an earlier system, and which a firmware could
// use to bring the old partitions back) is zeroed too. All of it is
// flushed to stable storage before Begin returns.
func (w *Writer) Begin() error {
	if w.begun {
		return errors.New("writer: Begin called twice")
	}
	if err := w.t.Prepare(w.m.ImageSize); err != nil {
		return err
	}
	if !w.opts.NoDirect {
		w.direct = openDirect(w.t.path, os.O_RDWR, w.t.sector)
		w.log.Debug("disk writer", "target", w.t.path, "o_direct", w.direct.enabled(), "sector", w.t.sector,
			"partition", w.t.partition, "head_chunks", w.headChunks)
	}
	if err := w.writeAt(make([]byte, min(HeadSize, w.m.ImageSize)), 0); err != nil {
		return fmt.Errorf("mark the disk not imaged: %w", err)
	}
	if w.wholeDiskLarger() {
		ss := int64(w.t.sector)
		last := make([]byte, ss)
		if _, err := w.t.f.ReadAt(last, w.t.size-ss); err != nil {
			return fmt.Errorf("read the disk's last sector: %w", err)
		}
		if string(last[:8]) == gptSignature {
			w.log.Info("wiping a stale backup GPT header at the disk's end", "offset", w.t.size-ss)
			if err := w.t.WriteAt(make([]byte, ss), w.t.size-ss); err != nil {
				return fmt.Errorf("wipe the stale backup GPT: %w", err)
			}
		}
	}
	if err := w.t.Sync(); err != nil {
		return err
	}
	w.begun = true
	return nil
}

// wholeDiskLarger reports whether the target is a whole-disk block device
// larger than the image: the only case where the Writer touches anything
// past the image's range.
func (w *Writer) wholeDiskLarger() bool {
	return w.t.block && !w.t.partition && w.t.size > w.m.ImageSize
}

// check validates a chunk number and the writer's state.
func (w *Writer) check(i int) error {
	switch {
	case !w.begun:
		return errors.New("writer: chunk written before Begin")
	case w.finished:
		return errors.New("writer: chunk written after Finish")
	case i < 0 || i >= len(w.m.Chunks):
		return fmt.Errorf("writer: chunk %d out of range [0, %d)", i, len(w.m.Chunks))
	}
	return nil
}

func (w *Writer) markDone(i int) {
	if !w.done[i] {
		w.done[i] = true
		w.remaining--
	}
}

// WriteChunk writes chunk i's uncompressed bytes, which the caller has
// verified (Decoder.Decode does). Chunks of the first MiB are kept in
// memory until Finish; data may be reused once WriteChunk returns.
func (w *Writer) WriteChunk(i int, data []byte) error {
	if err := w.check(i); err != nil {
		return err
	}
	off, n := w.m.ChunkRange(i)
	if len(data) != n {
		return fmt.Errorf("writer: chunk %d has %d bytes, want %d", i, len(data), n)
	}
	if i < w.headChunks {
		copy(w.head[off:], data)
	} else if err := w.writeAt(data, off); err != nil {
		return fmt.Errorf("chunk %d: %w", i, err)
	}
	w.markDone(i)
	return nil
}

// ZeroChunk makes chunk i read as zeros: BLKZEROOUT on a block device, a
// punched hole in a file, plain zeros where neither works, or nothing at
// all with SkipZeros.
func (w *Writer) ZeroChunk(i int) error {
	if err := w.check(i); err != nil {
		return err
	}
	off, n := w.m.ChunkRange(i)
	switch {
	case i < w.headChunks:
		clear(w.head[off : off+int64(n)])
	case w.opts.SkipZeros:
	default:
		if err := w.t.Zero(off, int64(n)); err != nil {
			return fmt.Errorf("zero chunk %d: %w", i, err)
		}
	}
	w.markDone(i)
	return nil
}

// Written reports whether chunk i has been written or zeroed. A session
// that resumes after a server restart keeps its Writer (the head chunks
// live in it) and asks it what is already on the disk.
func (w *Writer) Written(i int) bool { return i >= 0 && i < len(w.done) && w.done[i] }

// Remaining is how many chunks are still to be written.
func (w *Writer) Remaining() int { return w.remaining }

// writeAt writes b at off, with O_DIRECT when it qualifies.
func (w *Writer) writeAt(b []byte, off int64) error {
	if w.direct != nil {
		ok, err := w.direct.writeAt(b, off)
		if err != nil || ok {
			return err
		}
	}
	return w.t.WriteAt(b, off)
}

// Finish completes the disk, in this order, flushing after each step:
// everything written so far; on a whole disk larger than a GPT image, the
// backup GPT entries and header at the disk's end (and, with Grow, the
// last partition extended to the new last usable LBA); the held head
// except its first 4 KiB; the first 4 KiB (MBR and primary GPT header)
// last of all. Then a whole disk's partition table is re-read (BLKRRPART).
// Finish refuses to run while any chunk is missing.
func (w *Writer) Finish(ctx context.Context) error {
	switch {
	case !w.begun:
		return errors.New("writer: Finish before Begin")
	case w.finished:
		return nil
	case w.remaining > 0:
		first := 0
		for first < len(w.done) && w.done[first] {
			first++
		}
		return fmt.Errorf("writer: %d of %d chunks were never written (the first is chunk %d); the disk stays marked not imaged", w.remaining, len(w.done), first)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := w.t.Sync(); err != nil {
		return err
	}
	if err := w.fixGPT(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	split := int64(min(directAlign, len(w.head)))
	if err := w.writeAt(w.head[split:], split); err != nil {
		return fmt.Errorf("write the disk's first MiB: %w", err)
	}
	if err := w.t.Sync(); err != nil {
		return err
	}
	if err := w.writeAt(w.head[:split], 0); err != nil {
		return fmt.Errorf("write the disk's first sectors: %w", err)
	}
	if err := w.t.Sync(); err != nil {
		return err
	}
	w.finished = true
	if err := w.t.rereadPartitions(); err != nil {
		// The image is on the disk; only the kernel's view is stale.
		w.log.Warn("the kernel did not re-read the partition table", "err", err)
	}
	return nil
}

// fixGPT moves a GPT image's backup to the end of a larger whole disk and
// patches the held head to match.
func (w *Writer) fixGPT() error {
	if !w.wholeDiskLarger() {
		if w.opts.Grow {
			w.log.Warn("--grow needs a whole disk larger than the image; partitions left as they are")
		}
		return nil
	}
	plan, err := planGPT(w.head, w.t.size, w.t.sector, w.opts.Grow)
	switch {
	case errors.Is(err, errNoGPT):
		if w.opts.Grow {
			w.log.Warn("the image has no GPT; --grow has nothing to grow")
		}
		return nil
	case err != nil:
		w.log.Warn("GPT left as the image has it", "err", err)
		return nil
	}
	for _, r := range plan.tail {
		if err := w.t.WriteAt(r.data, r.off); err != nil {
			return fmt.Errorf("write the backup GPT: %w", err)
		}
	}
	if err := w.t.Sync(); err != nil {
		return err
	}
	for _, p := range plan.patches {
		copy(w.head[p.off:], p.want)
	}
	w.patches, w.tail = plan.patches, plan.tail
	attrs := []any{"disk_bytes", w.t.size, "last_usable_lba", plan.lastUsable}
	if plan.grown >= 0 {
		attrs = append(attrs, "grown_partition", plan.grown+1, "old_last_lba", plan.oldEnd, "new_last_lba", plan.newEnd)
	}
	w.log.Info("moved the backup GPT to the disk's end", attrs...)
	return nil
}

// Verify reads the disk back (see Target.ReadBack) after Finish. Fix-ups
// Finish made inside the image's range must be on the disk and are hashed
// as the image's own bytes, so the result's SHA-256 equals the manifest's
// exactly when the disk holds the image plus those fix-ups; the backup GPT
// past the image must read back too.
func (w *Writer) Verify(ctx context.Context, progress func(done int64)) (ReadBackResult, error) {
	if !w.finished {
		return ReadBackResult{BadChunk: -1}, errors.New("writer: Verify before Finish")
	}
	res, err := w.t.readBack(ctx, w.m, w.patches, progress)
	if err != nil {
		return res, err
	}
	for _, r := range w.tail {
		got := make([]byte, len(r.data))
		if _, err := w.t.f.ReadAt(got, r.off); err != nil {
			return res, fmt.Errorf("read back the backup GPT at %d: %w", r.off, err)
		}
		if !bytes.Equal(got, r.data) {
			return res, fmt.Errorf("read back: the backup GPT at %d differs from what was written", r.off)
		}
	}
	return res, nil
}

// Close releases the writer's O_DIRECT descriptor (not the Target). It is
// idempotent.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	return w.direct.Close()
}
