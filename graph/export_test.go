package graph

import "time"

// SetIndexWait sets how long a traversal waits for its tenant's in-memory index to load
// before it uses SQL: tests that must run in memory wait as long as the load takes.
func SetIndexWait(s *Store, d time.Duration) { s.mem.wait = d }

// SetMaxCatchUp sets the most changed edges a catch-up applies before the index reloads.
func SetMaxCatchUp(s *Store, n int) { s.mem.maxCatchUp = n }
