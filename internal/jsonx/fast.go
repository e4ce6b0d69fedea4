package jsonx

import (
	"bytes"
	"strconv"
)

// valid is the fast path of Validate: one pass over the bytes, no allocation for
// documents of ordinary shape. It answers true only for a document Validate accepts (one
// JSON object, nesting at most MaxDepth, no duplicate keys, numbers within float64 range,
// no \u0000); false means "not sure", and Validate then runs the decoder-based check,
// which finds and names the problem (or accepts what this pass left to it, such as keys
// written with escapes). encoding/json's token reader, which that check uses, cost about
// 15 µs for a 200-byte document: most of an import's time.
func valid(b []byte) bool {
	s := scanner{b: b}
	s.space()
	if !s.object(1) {
		return false
	}
	s.space()
	return s.i == len(b)
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// value reads one value at nesting depth (the containers around it).
func (s *scanner) value(depth int) bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return depth < MaxDepth && s.object(depth+1)
	case c == '[':
		return depth < MaxDepth && s.array(depth+1)
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return false
}

func (s *scanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return false
	}
	s.i += len(lit)
	return true
}

// smallObject is how many keys an object may have before duplicates are found with a map
// rather than by comparing each key with those before it.
const smallObject = 16

// object reads an object (s.i at its '{'), the depth-th container.
func (s *scanner) object(depth int) bool {
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return false
	}
	s.i++
	var small [smallObject][]byte
	var keys map[string]struct{}
	n := 0
	s.space()
	if s.closes('}') {
		return true
	}
	for {
		s.space()
		key, ok := s.str()
		if !ok || bytes.IndexByte(key, '\\') >= 0 {
			return false // an escaped key is compared decoded: left to the full check
		}
		switch {
		case n < smallObject:
			for _, k := range small[:n] {
				if bytes.Equal(k, key) {
					return false
				}
			}
			small[n] = key
		default:
			if keys == nil {
				keys = make(map[string]struct{}, 2*smallObject)
				for _, k := range small {
					keys[string(k)] = struct{}{}
				}
			}
			if _, dup := keys[string(key)]; dup {
				return false
			}
			keys[string(key)] = struct{}{}
		}
		n++
		s.space()
		if !s.closes(':') {
			return false
		}
		s.space()
		if !s.value(depth) {
			return false
		}
		if more, ok := s.after('}'); !more {
			return ok
		}
	}
}

// array reads an array (s.i at its '['), the depth-th container.
func (s *scanner) array(depth int) bool {
	s.i++
	s.space()
	if s.closes(']') {
		return true
	}
	for {
		s.space()
		if !s.value(depth) {
			return false
		}
		if more, ok := s.after(']'); !more {
			return ok
		}
	}
}

// closes consumes c when it comes next.
func (s *scanner) closes(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// after reads what follows a container's member: a comma (more) or the container's end.
func (s *scanner) after(end byte) (more, ok bool) {
	s.space()
	switch {
	case s.closes(','):
		return true, true
	case s.closes(end):
		return false, true
	}
	return false, false
}

// str reads a string (s.i at its opening quote) and answers its raw bytes between the
// quotes. Control characters, bad escapes and \u0000 make it false.
func (s *scanner) str() ([]byte, bool) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for i := start; i < len(s.b); i++ {
		switch c := s.b[i]; {
		case c == '"':
			s.i = i + 1
			return s.b[start:i], true
		case c < 0x20:
			return nil, false
		case c == '\\':
			if i+1 >= len(s.b) {
				return nil, false
			}
			switch s.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+6 > len(s.b) {
					return nil, false
				}
				hex := s.b[i+2 : i+6]
				for _, h := range hex {
					if !isHex(h) {
						return nil, false
					}
				}
				if string(hex) == "0000" {
					return nil, false // NUL: refused, by the full check, with its pointer
				}
				i += 5
			default:
				return nil, false
			}
		}
	}
	return nil, false
}

// number reads a number (RFC 8259 grammar) and checks that it fits in a float64; only a
// number with an exponent or hundreds of digits can overflow.
func (s *scanner) number() bool {
	start := s.i
	i := s.i
	if s.b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(s.b) && s.b[i] >= '0' && s.b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(s.b) && s.b[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s.b) && s.b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	exp := false
	if i < len(s.b) && (s.b[i] == 'e' || s.b[i] == 'E') {
		exp = true
		i++
		if i < len(s.b) && (s.b[i] == '+' || s.b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	s.i = i
	if exp || i-start > 300 {
		f, err := strconv.ParseFloat(string(s.b[start:i]), 64)
		return err == nil && f == f
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }
