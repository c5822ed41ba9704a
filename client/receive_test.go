package client

import (
	"crypto/sha256"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/shoal-lab/shoal/imaging"
	"github.com/shoal-lab/shoal/internal/fec"
	"github.com/shoal-lab/shoal/protocol"
)

// newTestReceiver builds a receiver for a three-chunk image without
// sockets: chunk 0 raw (5 fragments of 1000 bytes), chunk 1 zero, chunk 2
// raw.
func newTestReceiver(t *testing.T) (*receiver, [][]byte) {
	t.Helper()
	const chunk = 4096
	data := [][]byte{make([]byte, chunk), make([]byte, chunk), make([]byte, chunk)}
	for i := range data[0] {
		data[0][i] = byte(i)
		data[2][i] = byte(i * 7)
	}
	m := &imaging.Manifest{ImageSize: 3 * chunk, ChunkSize: chunk, Chunks: []imaging.ChunkInfo{
		{Encoding: imaging.EncodingRaw, WireSize: chunk, SHA256: sha256.Sum256(data[0])},
		{Encoding: imaging.EncodingZero, SHA256: sha256.Sum256(data[1])},
		{Encoding: imaging.EncodingRaw, WireSize: chunk, SHA256: sha256.Sum256(data[2])},
	}}
	s := &session{cfg: &Config{BufferChunks: 8}, manifest: m, accept: protocol.Accept{PayloadSize: 1000}}
	r := &receiver{
		codec: fec.NewCodec(),
		s:     s, log: slog.New(slog.DiscardHandler), m: m, payload: 1000, window: 8,
		chunks: make([]chunkState, 3), asm: map[int]*assembly{}, bufSize: chunk,
		writeQ: make(chan writeJob, 8), results: make(chan writeResult, 8),
	}
	return r, data
}

func TestReceiverMissingRanges(t *testing.T) {
	r, data := newTestReceiver(t)
	frag := func(c, f int) *protocol.Data {
		end := min(len(data[c]), (f+1)*1000)
		return &protocol.Data{Chunk: uint32(c), Frag: uint16(f), FragCount: 5, Payload: data[c][f*1000 : end]}
	}
	r.data(frag(0, 1), false)
	r.data(frag(0, 3), false)
	r.data(frag(0, 3), false) // duplicate

	got := r.missing(0, nil)
	want := []protocol.NackRange{{Chunk: 0, First: 0, Count: 1}, {Chunk: 0, First: 2, Count: 1}, {Chunk: 0, First: 4, Count: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("missing(0) = %v, want %v", got, want)
	}
	if got := r.missing(2, nil); !reflect.DeepEqual(got, []protocol.NackRange{{Chunk: 2, First: 0, Count: 5}}) {
		t.Fatalf("missing(2) = %v, want the whole chunk", got)
	}
	if r.stats.Duplicates != 1 || r.stats.Received != 2 {
		t.Fatalf("stats = %+v, want 2 received, 1 duplicate", r.stats)
	}

	// Completing the chunk hands it to the writer with the right bytes.
	for _, f := range []int{0, 2, 4} {
		r.data(frag(0, f), true)
	}
	select {
	case job := <-r.writeQ:
		if job.chunk != 0 || string(job.wire) != string(data[0]) {
			t.Fatalf("writer got chunk %d with wrong bytes", job.chunk)
		}
	default:
		t.Fatal("complete chunk not queued for the writer")
	}
	if r.stats.Received != 2 {
		t.Errorf("repairs counted as first copies: %+v", r.stats)
	}
}

func TestReceiverRejectsBadFragments(t *testing.T) {
	tests := []struct {
		name string
		d    protocol.Data
	}{
		{"chunk past the end", protocol.Data{Chunk: 3, FragCount: 5, Payload: make([]byte, 1000)}},
		{"zero chunk", protocol.Data{Chunk: 1, FragCount: 5, Payload: make([]byte, 1000)}},
		{"wrong fragment count", protocol.Data{Chunk: 0, FragCount: 4, Payload: make([]byte, 1000)}},
		{"short payload", protocol.Data{Chunk: 0, Frag: 1, FragCount: 5, Payload: make([]byte, 999)}},
		{"long last payload", protocol.Data{Chunk: 0, Frag: 4, FragCount: 5, Payload: make([]byte, 1000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newTestReceiver(t)
			r.data(&tt.d, false)
			if r.stats.BadPackets != 1 || len(r.asm) != 0 {
				t.Fatalf("stats %+v, assemblies %d: want the packet rejected", r.stats, len(r.asm))
			}
		})
	}
}

func TestReceiverAdvanceMakesChunksDue(t *testing.T) {
	r, _ := newTestReceiver(t)
	now := time.Now()
	r.advance(2, now)
	if r.chunks[0].due.IsZero() || r.chunks[1].due.IsZero() || !r.chunks[2].due.IsZero() {
		t.Fatalf("due after advance(2): %v %v %v", r.chunks[0].due, r.chunks[1].due, r.chunks[2].due)
	}
	// Nothing is asked for before the grace ends.
	r.s.ctl = nil
	if err := r.scan(now); err != nil {
		t.Fatal(err)
	}
	if r.stats.Nacks != 0 {
		t.Fatal("asked before the reorder grace")
	}
}

func TestCoalesceFor(t *testing.T) {
	tests := []struct {
		rcvbuf int
		want   time.Duration
	}{
		{0, minCoalesce},                   // unknown: the shortest pause
		{212992, 425984 * time.Nanosecond}, // Linux's default buffer: what 1 Gbit/s fills a quarter of
		{2 * dataRecvBuffer, maxCoalesce},  // SO_RCVBUFFORCE took: the longest
		{1 << 30, maxCoalesce},             //
		{20000, minCoalesce},               // tiny: never below the floor
	}
	for _, tt := range tests {
		if got := coalesceFor(tt.rcvbuf); got != tt.want {
			t.Errorf("coalesceFor(%d) = %s, want %s", tt.rcvbuf, got, tt.want)
		}
	}
}
