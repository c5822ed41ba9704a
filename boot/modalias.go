package boot

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// AliasTable maps device modaliases to kernel modules, from a
// modules.alias file.
type AliasTable struct {
	// byPrefix groups the entries by the bus prefix of their pattern
	// ("pci", "usb", "virtio", …) so a device is matched against its own
	// bus only.
	byPrefix map[string][]aliasEntry
}

type aliasEntry struct {
	pattern string // a shell glob, e.g. "pci:v00008086d0000100Esv*sd*bc*sc*i*"
	module  string
}

// ParseAliases reads a modules.alias file: lines "alias PATTERN MODULE",
// '#' comments. Malformed lines are skipped; patterns that are not valid
// globs are dropped.
func ParseAliases(r io.Reader) (*AliasTable, error) {
	t := &AliasTable{byPrefix: map[string][]aliasEntry{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "alias" {
			continue
		}
		if _, err := path.Match(f[1], ""); err != nil {
			continue
		}
		p := aliasPrefix(f[1])
		t.byPrefix[p] = append(t.byPrefix[p], aliasEntry{pattern: f[1], module: f[2]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.alias: %w", err)
	}
	return t, nil
}

// aliasPrefix is the part of a modalias or pattern before the first ':'
// (the bus), or "" if there is none or it holds a glob character.
func aliasPrefix(s string) string {
	p, _, ok := strings.Cut(s, ":")
	if !ok || strings.ContainsAny(p, "*?[") {
		return ""
	}
	return p
}

// Len is the number of aliases in the table.
func (t *AliasTable) Len() int {
	n := 0
	for _, e := range t.byPrefix {
		n += len(e)
	}
	return n
}

// Match returns the modules whose aliases match modalias, in the table's
// order, each once.
func (t *AliasTable) Match(modalias string) []string {
	modalias = strings.TrimSpace(modalias)
	if modalias == "" {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for _, group := range [][]aliasEntry{t.byPrefix[aliasPrefix(modalias)], t.byPrefix[""]} {
		for _, e := range group {
			if seen[e.module] {
				continue
			}
			// path.Match treats '/' specially; modaliases never hold one,
			// and a pattern error was ruled out when parsing.
			if ok, _ := path.Match(e.pattern, modalias); ok {
				seen[e.module] = true
				out = append(out, e.module)
			}
		}
	}
	return out
}
