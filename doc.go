// Package strata is the front door of Strata, a PostgreSQL-native application data
// platform: one PostgreSQL as the whole data backbone of an application.
//
// Open starts (or connects to) the database, migrates every module's schema and returns a
// *Strata whose modules are reached through their Go APIs; the same platform is served as a
// JSON HTTP API by `strata serve`.
//
//	s, err := strata.Open(ctx, strata.Config{DataDir: "./strata-data"})
//	if err != nil { ... }
//	defer s.Close()
//
// With no DatabaseURL, Open runs an embedded PostgreSQL from the machine's server binaries
// as a child process in DataDir; with one, it uses that database (PostgreSQL 14 or newer)
// and nothing else changes.
package strata
