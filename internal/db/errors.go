package db

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stratadb/strata/problem"
)

// Translate turns a driver error into a problem, once, at the module boundary. what names
// the thing being read or written ("collection \"notes\""), for the detail of not-found and
// conflict problems. A nil error stays nil and a problem passes through unchanged;
// context cancellation passes through so callers can tell a client that went away.
func Translate(err error, what string) error {
	if err == nil {
		return nil
	}
	if _, ok := problem.As(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return problem.NotFound("not_found", "%s not found", what).WithCause(err)
	}
	if IsUnavailable(err) {
		return problem.Unavailable("database_unavailable", "the database is unavailable; retry shortly").WithCause(err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23505": // unique_violation
			return problem.Conflict("already_exists", "%s already exists", what).WithCause(err)
		case "23503": // foreign_key_violation
			return problem.Conflict("reference_violation", "%s refers to something that does not exist, or is still referred to", what).WithCause(err)
		case "23514", "23502": // check_violation, not_null_violation
			return problem.Unprocessable("constraint_violation", "%s violates a constraint", what).WithCause(err)
		case "40001", "40P01": // serialization_failure, deadlock_detected
			return problem.Conflict("transaction_conflict", "a concurrent change conflicted with this request; retry it").WithCause(err)
		case "57014": // query_canceled: statement_timeout
			return problem.Unavailable("query_timeout", "the query took too long and was canceled").WithCause(err)
		case "54000", "54001": // program_limit_exceeded, statement_too_complex
			return problem.Unprocessable("too_complex", "the request is too complex for the database").WithCause(err)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return problem.Unavailable("timeout", "the request timed out").WithCause(err)
	}
	return problem.Internal(err)
}

// IsUnavailable reports whether err means the database could not be reached or is not
// accepting work right now (connection refused or lost, shutting down, starting up, too many
// connections), as opposed to an error in the request itself.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	// A server that answered with an error is reachable: a wrong password (28P01), a
	// missing role or database (28000, 3D000) is a configuration problem, not an outage.
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case len(pe.Code) == 5 && pe.Code[:2] == "08": // connection_exception class
			return true
		case pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", pe.Code == "53300":
			// admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true
	}
	if errors.Is(err, pgconn.ErrConnClosed) {
		return true
	}
	// A connection that died mid-query: an I/O error wrapped by the driver (whose errors
	// carry SafeToRetry). The same I/O errors from elsewhere are not the database's.
	var fromDriver interface{ SafeToRetry() bool }
	if !errors.As(err, &fromDriver) {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	var ne net.Error
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNREFUSED)
}
