// Package ndjson reads newline-delimited JSON imports line by line, bounding the memory an
// overlong line can take, and keeps the report every import returns.
package ndjson

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/stratadb/strata/problem"
)

// Reader reads lines of at most a limit of bytes.
type Reader struct {
	r     *bufio.Reader
	limit int
	// Line is the number of the line last read, from 1.
	Line int64
	// EOF is set once the input is exhausted.
	EOF bool
}

// NewReader reads r in lines of at most limit bytes.
func NewReader(r io.Reader, limit int) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 1<<20), limit: limit}
}

// Next returns the next line, trimmed of surrounding space. A line longer than the limit
// is skipped over without being held, and reported as tooLong.
func (lr *Reader) Next() (line []byte, tooLong bool, err error) {
	for {
		chunk, err := lr.r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > lr.limit {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			lr.EOF = true
		} else if err != nil {
			return nil, false, fmt.Errorf("reading the import: %w", err)
		}
		break
	}
	lr.Line++
	return bytes.TrimSpace(line), tooLong, nil
}

// Report says what an import did.
type Report struct {
	Lines    int64         `json:"lines"`
	Imported int64         `json:"imported"`
	Failed   int64         `json:"failed"`
	Errors   []LineError   `json:"errors,omitempty" doc:"The first 1000 failing lines."`
	Elapsed  time.Duration `json:"elapsed_ms" doc:"Milliseconds."`
}

// MarshalJSON writes Elapsed in milliseconds.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report
	p := plain(r)
	p.Elapsed = r.Elapsed / time.Millisecond
	return json.Marshal(p)
}

// LineError is a line that could not be imported.
type LineError struct {
	Line    int64  `json:"line"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Pointer string `json:"pointer,omitempty"`
}

// MaxErrors is how many failing lines a report lists (it counts them all).
const MaxErrors = 1000

// Fail records that a line failed: its problem's code and detail, or code for another error.
func (r *Report) Fail(line int64, code string, err error) {
	r.Failed++
	if len(r.Errors) >= MaxErrors {
		return
	}
	le := LineError{Line: line, Code: code, Message: err.Error()}
	if p, ok := problem.As(err); ok {
		le.Code, le.Message = p.Code, p.Detail
		if len(p.Errors) > 0 {
			le.Pointer = p.Errors[0].Location
		}
	}
	r.Errors = append(r.Errors, le)
}

// Batcher reads lines in batches of good items, recording the bad lines in Report.
type Batcher[T any] struct {
	R      *Reader
	Report *Report
	// Code is a bad line's code when its error is not a problem.
	Code string
	// TooLong is the error of a line over the reader's limit.
	TooLong func() error
	// Parse turns a line into an item, or fails the line.
	Parse func(line []byte) (T, error)
	// Fatal, when set, picks the errors that end the import instead of failing a line.
	Fatal func(error) bool
}

// Next reads up to max good items; blank lines are skipped and not counted.
func (b *Batcher[T]) Next(max int) ([]T, error) {
	var batch []T
	for len(batch) < max && !b.R.EOF {
		raw, tooLong, err := b.R.Next()
		if err != nil {
			return nil, err
		}
		if tooLong {
			b.Report.Lines++
			b.Report.Fail(b.R.Line, b.Code, b.TooLong())
			continue
		}
		if len(raw) == 0 {
			continue
		}
		b.Report.Lines++
		item, err := b.Parse(raw)
		if err != nil && b.Fatal != nil && b.Fatal(err) {
			return nil, err
		}
		if err != nil {
			b.Report.Fail(b.R.Line, b.Code, err)
			continue
		}
		batch = append(batch, item)
	}
	return batch, nil
}
