// Package weights reads and writes the built-in embedder's model file: a small JSON header
// (the model's metadata and a table of tensors) followed by the tensors' raw little-endian
// data, each stored as float32 or, for the large matrices, IEEE 754 half precision (fp16).
//
// Layout:
//
//	magic   8 bytes  "STRWGT01"
//	length  uint32   little-endian length of the header
//	header  JSON     {"meta": {...}, "tensors": [{"name", "dtype", "shape", "offset"}, ...]}
//	data    bytes    from the next multiple of 64; each offset is relative to it
//
// The format exists so the model can be embedded in the binary with //go:embed and read
// without a parser for TensorFlow.js's manifest: reading is a header decode and one
// conversion pass per tensor.
package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Magic starts every model file; its last two characters are the format version.
const Magic = "STRWGT01"

// align is the data section's alignment in bytes.
const align = 64

// DType names how a tensor's elements are stored.
type DType string

// The element types a file may hold.
const (
	F32 DType = "f32" // IEEE 754 binary32, 4 bytes
	F16 DType = "f16" // IEEE 754 binary16, 2 bytes, widened to float32 when read
)

func (d DType) size() int {
	switch d {
	case F32:
		return 4
	case F16:
		return 2
	}
	return 0
}

// Tensor is one named array of numbers with its shape, in row-major order.
type Tensor struct {
	// Name identifies the tensor within the file, such as "l0.qkv.w".
	Name string
	// Shape lists the dimensions; the product is len(Data).
	Shape []int
	// Data holds the values.
	Data []float32
	// DType is how Write stores Data; the zero value means F32.
	DType DType
}

// entry is a tensor's row in the header.
type entry struct {
	Name   string `json:"name"`
	DType  DType  `json:"dtype"`
	Shape  []int  `json:"shape"`
	Offset int64  `json:"offset"`
}

type header struct {
	Meta    json.RawMessage `json:"meta"`
	Tensors []entry         `json:"tensors"`
}

// Write stores meta (marshaled as JSON) and the tensors in w.
func Write(w io.Writer, meta any, tensors []Tensor) error {
	rawMeta, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("encoding model metadata: %w", err)
	}
	h := header{Meta: rawMeta}
	var off int64
	for _, t := range tensors {
		dt := t.DType
		if dt == "" {
			dt = F32
		}
		if dt.size() == 0 {
			return fmt.Errorf("tensor %q: unknown dtype %q", t.Name, dt)
		}
		if n := count(t.Shape); n != len(t.Data) {
			return fmt.Errorf("tensor %q: shape %v holds %d values, data has %d", t.Name, t.Shape, n, len(t.Data))
		}
		h.Tensors = append(h.Tensors, entry{Name: t.Name, DType: dt, Shape: t.Shape, Offset: off})
		off += int64(len(t.Data) * dt.size())
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encoding model header: %w", err)
	}
	var buf bytes.Buffer
	buf.WriteString(Magic)
	_ = binary.Write(&buf, binary.LittleEndian, uint32(len(hb)))
	buf.Write(hb)
	buf.Write(make([]byte, padding(buf.Len())))
	for i, t := range tensors {
		writeData(&buf, h.Tensors[i].DType, t.Data)
	}
	_, err = w.Write(buf.Bytes())
	return err
}

func writeData(buf *bytes.Buffer, dt DType, data []float32) {
	b := make([]byte, len(data)*dt.size())
	for i, v := range data {
		if dt == F16 {
			binary.LittleEndian.PutUint16(b[2*i:], ToHalf(v))
		} else {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
	}
	buf.Write(b)
}

// File is a model file opened by Read. Its methods do not copy the underlying bytes until a
// tensor is asked for.
type File struct {
	meta    json.RawMessage
	tensors map[string]entry
	data    []byte
}

// Read parses a model file held in memory. It checks the header and that every tensor lies
// within the data, but decodes no tensor.
func Read(b []byte) (*File, error) {
	if len(b) < len(Magic)+4 || string(b[:len(Magic)]) != Magic {
		return nil, errors.New("not a model file: bad magic")
	}
	n := int(binary.LittleEndian.Uint32(b[len(Magic):]))
	start := len(Magic) + 4
	if n > len(b)-start {
		return nil, fmt.Errorf("model header of %d bytes exceeds the file", n)
	}
	var h header
	if err := json.Unmarshal(b[start:start+n], &h); err != nil {
		return nil, fmt.Errorf("decoding model header: %w", err)
	}
	dataStart := start + n + padding(start+n)
	if dataStart > len(b) {
		return nil, errors.New("model file truncated before its data")
	}
	f := &File{meta: h.Meta, tensors: make(map[string]entry, len(h.Tensors)), data: b[dataStart:]}
	for _, e := range h.Tensors {
		if err := f.check(e); err != nil {
			return nil, err
		}
		f.tensors[e.Name] = e
	}
	return f, nil
}

func (f *File) check(e entry) error {
	if e.DType.size() == 0 {
		return fmt.Errorf("tensor %q: unknown dtype %q", e.Name, e.DType)
	}
	if _, dup := f.tensors[e.Name]; dup {
		return fmt.Errorf("tensor %q listed twice", e.Name)
	}
	n := count(e.Shape)
	if n < 0 || e.Offset < 0 || e.Offset > int64(len(f.data)) || int64(n)*int64(e.DType.size()) > int64(len(f.data))-e.Offset {
		return fmt.Errorf("tensor %q: shape %v at offset %d lies outside the data", e.Name, e.Shape, e.Offset)
	}
	return nil
}

// Meta decodes the file's metadata into v.
func (f *File) Meta(v any) error {
	if err := json.Unmarshal(f.meta, v); err != nil {
		return fmt.Errorf("decoding model metadata: %w", err)
	}
	return nil
}

// Float32 returns the named tensor's values as a new slice, after checking its shape.
func (f *File) Float32(name string, shape ...int) ([]float32, error) {
	e, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("model has no tensor %q", name)
	}
	if !equal(e.Shape, shape) {
		return nil, fmt.Errorf("tensor %q has shape %v, want %v", name, e.Shape, shape)
	}
	out := make([]float32, count(shape))
	b := f.data[e.Offset:]
	for i := range out {
		if e.DType == F16 {
			out[i] = FromHalf(binary.LittleEndian.Uint16(b[2*i:]))
		} else {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
	return out, nil
}

// count is the number of elements of a shape, or -1 when a dimension is negative or the
// product overflows what a file can hold.
func count(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt32/d) {
			return -1
		}
		n *= d
	}
	return n
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func padding(n int) int { return (align - n%align) % align }
