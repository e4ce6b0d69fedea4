// Package history is how Strata keeps the versions of a JSON value (a document's body, an
// edge's properties) compactly: the current value lives in its row, and every older
// version's history row keeps either a reverse delta (an RFC 6902 patch from the next
// version back to it) or a full snapshot — for the first version, every Nth, before a
// deletion, and whenever a delta would not be much smaller. Reading version n starts at the
// nearest newer snapshot (or the current value) and applies at most N-1 deltas.
package history

import (
	"errors"

	"github.com/stratadb/strata/internal/jsonx"
)

// Keep returns what the superseded version (number version, value cur) keeps when next
// replaces it: nothing when cur is a tombstone (nil), a snapshot for the first version,
// every every-th, before a deletion (next nil) or when a delta would be more than half of
// cur, and a reverse delta otherwise. The results are SQL arguments: nil or a string.
func Keep(version int64, cur, next []byte, every int) (snapshot, delta any, err error) {
	if cur == nil {
		return nil, nil, nil
	}
	if next == nil || version == 1 || version%int64(every) == 0 {
		return string(cur), nil, nil
	}
	d, err := jsonx.Diff(next, cur)
	if err != nil {
		return nil, nil, err
	}
	if len(d) > len(cur)/2 {
		return string(cur), nil, nil
	}
	return nil, string(d), nil
}

// Step is one history row: a snapshot, a delta, or neither (the current version, whose
// value is in its own row).
type Step struct {
	Snapshot, Delta []byte
}

// ErrChainTooLong means no row of the steps given holds a value to start from.
var ErrChainTooLong = errors.New("history chain is longer than the snapshot interval")

// Rebuild returns the value of steps[0]: steps are consecutive history rows in ascending
// version order, starting at the wanted version. It starts from the first row that holds a
// snapshot — or from current() when it reaches the current version first — and applies the
// reverse deltas back down to steps[0].
func Rebuild(steps []Step, current func() ([]byte, error)) ([]byte, error) {
	top := -1
	for i, st := range steps {
		if st.Snapshot != nil || st.Delta == nil {
			top = i
			break
		}
	}
	if top < 0 {
		return nil, ErrChainTooLong
	}
	body := steps[top].Snapshot
	if body == nil {
		var err error
		if body, err = current(); err != nil {
			return nil, err
		}
	}
	for i := top - 1; i >= 0; i-- {
		var err error
		if body, err = jsonx.Apply(body, steps[i].Delta); err != nil {
			return nil, err
		}
	}
	return body, nil
}
