package graph

import "time"

// SetIndexWait sets how long a traversal waits for its tenant's in-memory index to load
// before it uses SQL: tests that must run in memory wait as long as the load takes.
func SetIndexWait(s *Store, d time.Duration) { s.mem.wait = d }

// SetMaxCatchUp sets the most changed edges a catch-up applies before the index reloads.
func SetMaxCatchUp(s *Store, n int) { s.mem.maxCatchUp = n }

// SetReloadWait sets the first pause between reloads of a tenant's index.
func SetReloadWait(s *Store, d time.Duration) { s.mem.reloadWait = d }

// Loading reports whether a load of the tenant's index is under way.
func Loading(s *Store, tenant string) bool {
	s.mem.mu.Lock()
	defer s.mem.mu.Unlock()
	_, ok := s.mem.loading[tenant]
	return ok
}

// HoldIndexRead read-locks the tenant's loaded index, as a long traversal does, until
// the returned function is called; ok is false when none is loaded.
func HoldIndexRead(s *Store, tenant string) (release func(), ok bool) {
	idx := s.mem.get(tenant)
	if idx == nil {
		return nil, false
	}
	idx.mu.RLock()
	return idx.mu.RUnlock, true
}
