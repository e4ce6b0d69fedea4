// Package problem is Strata's error type: every error a module returns to a caller is a
// *Error with an HTTP status, a stable machine-readable code and a human-readable detail,
// and the HTTP layer writes it as an RFC 9457 application/problem+json document.
//
// Library callers test errors by kind with errors.Is against the sentinels
// (errors.Is(err, problem.ErrNotFound)) or by code with problem.HasCode.
package problem

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// ContentType is the media type of a problem document (RFC 9457).
const ContentType = "application/problem+json"

// Error is a problem detail: what went wrong, as a client may act on it. The zero value is
// not useful; build one with New or a kind constructor such as NotFound.
type Error struct {
	// Type is a URI reference naming the problem type; "about:blank" when the code says all.
	Type string `json:"type,omitempty"`
	// Title is the HTTP status text.
	Title string `json:"title"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence for a human. It never contains secrets.
	Detail string `json:"detail,omitempty"`
	// Code is a stable, snake_case identifier a client can switch on (see docs/errors.md).
	Code string `json:"code"`
	// RequestID ties the problem to the server's logs.
	RequestID string `json:"request_id,omitempty"`
	// Errors lists each failing field or JSON pointer, for validation problems.
	Errors []FieldError `json:"errors,omitempty"`

	// Extensions are extra members written at the top level of the document (RFC 9457 §3.2),
	// such as "current_version" on a failed precondition.
	Extensions map[string]any `json:"-"`

	_       struct{}    `additionalProperties:"true"`
	headers http.Header // response headers such as Retry-After; never serialized
	cause   error       // the underlying error, for logs and errors.Is; never serialized
}

// FieldError names one invalid part of a request.
type FieldError struct {
	// Location is where the problem is: "body.name", "query.limit", or a JSON pointer
	// such as "/address/zip" for document validation.
	Location string `json:"location,omitempty"`
	// Message says what is wrong there.
	Message string `json:"message"`
}

// Sentinels for errors.Is: a *Error matches the sentinel with the same status.
var (
	ErrInvalid            = &Error{Status: http.StatusBadRequest}
	ErrUnauthenticated    = &Error{Status: http.StatusUnauthorized}
	ErrForbidden          = &Error{Status: http.StatusForbidden}
	ErrNotFound           = &Error{Status: http.StatusNotFound}
	ErrConflict           = &Error{Status: http.StatusConflict}
	ErrPreconditionFailed = &Error{Status: http.StatusPreconditionFailed}
	ErrTooLarge           = &Error{Status: http.StatusRequestEntityTooLarge}
	ErrUnprocessable      = &Error{Status: http.StatusUnprocessableEntity}
	ErrRateLimited        = &Error{Status: http.StatusTooManyRequests}
	ErrUnavailable        = &Error{Status: http.StatusServiceUnavailable}
	ErrInternal           = &Error{Status: http.StatusInternalServerError}
)

// New returns a problem with the given status, code and detail (formatted with args).
func New(status int, code, format string, args ...any) *Error {
	detail := format
	if len(args) > 0 {
		detail = fmt.Sprintf(format, args...)
	}
	return &Error{Type: "about:blank", Title: http.StatusText(status), Status: status, Code: code, Detail: detail}
}

// Invalid is a 400: the request is malformed.
func Invalid(code, format string, args ...any) *Error {
	return New(http.StatusBadRequest, code, format, args...)
}

// Unauthenticated is a 401: no or bad credentials.
func Unauthenticated(code, format string, args ...any) *Error {
	return New(http.StatusUnauthorized, code, format, args...)
}

// Forbidden is a 403: the caller is known but lacks the right.
func Forbidden(code, format string, args ...any) *Error {
	return New(http.StatusForbidden, code, format, args...)
}

// NotFound is a 404, also used for things of another tenant so their existence is not leaked.
func NotFound(code, format string, args ...any) *Error {
	return New(http.StatusNotFound, code, format, args...)
}

// Conflict is a 409: the request clashes with the current state.
func Conflict(code, format string, args ...any) *Error {
	return New(http.StatusConflict, code, format, args...)
}

// PreconditionFailed is a 412: an If-Match or similar precondition did not hold.
func PreconditionFailed(code, format string, args ...any) *Error {
	return New(http.StatusPreconditionFailed, code, format, args...)
}

// TooLarge is a 413: the body or a part of it exceeds a limit.
func TooLarge(code, format string, args ...any) *Error {
	return New(http.StatusRequestEntityTooLarge, code, format, args...)
}

// Unprocessable is a 422: well-formed but semantically invalid input.
func Unprocessable(code, format string, args ...any) *Error {
	return New(http.StatusUnprocessableEntity, code, format, args...)
}

// RateLimited is a 429 asking the client to retry after the given delay.
func RateLimited(code string, retryAfter time.Duration, format string, args ...any) *Error {
	secs := int((retryAfter + time.Second - 1) / time.Second)
	return New(http.StatusTooManyRequests, code, format, args...).WithHeader("Retry-After", strconv.Itoa(max(secs, 1)))
}

// Unavailable is a 503: a dependency (usually the database) cannot be reached right now.
func Unavailable(code, format string, args ...any) *Error {
	return New(http.StatusServiceUnavailable, code, format, args...).WithHeader("Retry-After", "1")
}

// Internal is a 500 whose detail is generic; the cause is kept for logs only.
func Internal(cause error) *Error {
	e := New(http.StatusInternalServerError, "internal", "an unexpected error occurred; the request id locates it in the server log")
	e.cause = cause
	return e
}

// WithField appends a field error and returns e.
func (e *Error) WithField(location, message string) *Error {
	e.Errors = append(e.Errors, FieldError{Location: location, Message: message})
	return e
}

// WithExtension sets a top-level extension member and returns e.
func (e *Error) WithExtension(key string, value any) *Error {
	if e.Extensions == nil {
		e.Extensions = map[string]any{}
	}
	e.Extensions[key] = value
	return e
}

// WithHeader sets a response header (Retry-After, WWW-Authenticate, ETag…) and returns e.
func (e *Error) WithHeader(key, value string) *Error {
	if e.headers == nil {
		e.headers = http.Header{}
	}
	e.headers.Set(key, value)
	return e
}

// WithCause records the underlying error for logs and errors.Is/As, and returns e.
func (e *Error) WithCause(err error) *Error {
	e.cause = err
	return e
}

// Error returns the code and detail.
func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Code
	}
	return e.Code + ": " + e.Detail
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is a sentinel (or problem) of the same status, and of the same
// code when target has one.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Status == e.Status && (t.Code == "" || t.Code == e.Code)
}

// GetStatus returns the HTTP status (it makes *Error a huma.StatusError).
func (e *Error) GetStatus() int { return e.Status }

// GetHeaders returns the response headers to send with the problem (huma.HeadersError).
func (e *Error) GetHeaders() http.Header { return e.headers }

// ContentType makes the HTTP layer answer application/problem+json (huma.ContentTypeFilter).
func (e *Error) ContentType(string) string { return ContentType }

// MarshalJSON writes the standard members and the extensions at the top level.
func (e *Error) MarshalJSON() ([]byte, error) {
	type plain Error
	b, err := json.Marshal((*plain)(e))
	if err != nil || len(e.Extensions) == 0 {
		return b, err
	}
	m := make(map[string]any, len(e.Extensions)+8)
	for k, v := range e.Extensions {
		m[k] = v
	}
	var std map[string]any
	if err := json.Unmarshal(b, &std); err != nil {
		return nil, err
	}
	for k, v := range std { // standard members win over extensions of the same name
		m[k] = v
	}
	return json.Marshal(m)
}

// Clone returns a shallow copy of e that may be modified (for example to set RequestID).
func (e *Error) Clone() *Error {
	c := *e
	return &c
}

// As returns err as a *Error when it is or wraps one.
func As(err error) (*Error, bool) {
	var p *Error
	if errors.As(err, &p) {
		return p, true
	}
	return nil, false
}

// HasCode reports whether err is or wraps a problem with the given code.
func HasCode(err error, code string) bool {
	p, ok := As(err)
	return ok && p.Code == code
}
