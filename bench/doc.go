// Package bench holds Strata's side-by-side benchmarks: each subdirectory measures a module
// against raw PostgreSQL and against the peer libraries users would otherwise pick, in one
// run on one machine, and reports ratios. It is its own Go module so that peers (River,
// …) are dependencies of the benchmarks only, never of Strata. See README.md.
package bench
