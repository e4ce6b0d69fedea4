//go:build !race

package queue_test

// raceEnabled is set when the tests run with the race detector, which slows the worker
// processes of the fault tests several times over.
const raceEnabled = false
