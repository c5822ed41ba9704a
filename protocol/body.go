package protocol

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// maxString bounds every string field (session names, paths, reasons).
const maxString = 4096

// bodyReader decodes a body field by field. The first problem sticks in
// err and every later read returns zero values, so decoders read all
// fields and check once.
type bodyReader struct {
	b   []byte
	err error
}

func (r *bodyReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrBody}, args...)...)
	}
}

func (r *bodyReader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.fail("%s: need %d bytes, %d left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *bodyReader) u8(what string) uint8 {
	if v := r.take(1, what); v != nil {
		return v[0]
	}
	return 0
}

func (r *bodyReader) u16(what string) uint16 {
	if v := r.take(2, what); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *bodyReader) u32(what string) uint32 {
	if v := r.take(4, what); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *bodyReader) u64(what string) uint64 {
	if v := r.take(8, what); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *bodyReader) bool(what string) bool {
	switch r.u8(what) {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("%s: boolean is neither 0 nor 1", what)
	return false
}

// str reads a u16-length-prefixed UTF-8 string.
func (r *bodyReader) str(what string) string {
	n := int(r.u16(what))
	if n > maxString {
		r.fail("%s: %d bytes is longer than %d", what, n, maxString)
		return ""
	}
	v := r.take(n, what)
	if v == nil {
		return ""
	}
	if !utf8.Valid(v) {
		r.fail("%s: not UTF-8", what)
		return ""
	}
	return string(v)
}

// blob reads a u16-length-prefixed byte string of at most max bytes.
func (r *bodyReader) blob(what string, max int) []byte {
	n := int(r.u16(what))
	if n > max {
		r.fail("%s: %d bytes is longer than %d", what, n, max)
		return nil
	}
	return r.take(n, what)
}

func (r *bodyReader) fixed(dst []byte, what string) {
	if v := r.take(len(dst), what); v != nil {
		copy(dst, v)
	}
}

// done reports the sticky error, or trailing bytes.
func (r *bodyReader) done() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

func appendStr(b []byte, s string) []byte {
	if len(s) > maxString {
		s = s[:maxString]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBlob(b, v []byte) []byte {
	if len(v) > 0xffff {
		v = v[:0xffff]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}
