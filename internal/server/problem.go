package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Every error huma produces itself (validation, body size, parse errors, handler errors
// that are not problems) becomes a *problem.Error with a stable code.
func init() {
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		return toProblem(status, msg, errs)
	}
	huma.NewErrorWithContext = func(_ huma.Context, status int, msg string, errs ...error) huma.StatusError {
		return toProblem(status, msg, errs)
	}
}

// statusCodes are the codes of problems huma raises on its own, by status.
var statusCodes = map[int]string{
	http.StatusBadRequest:            "invalid_request",
	http.StatusUnauthorized:          "unauthenticated",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "not_found",
	http.StatusMethodNotAllowed:      "method_not_allowed",
	http.StatusNotAcceptable:         "not_acceptable",
	http.StatusRequestTimeout:        "request_timeout",
	http.StatusConflict:              "conflict",
	http.StatusPreconditionFailed:    "precondition_failed",
	http.StatusRequestEntityTooLarge: "body_too_large",
	http.StatusUnsupportedMediaType:  "unsupported_media_type",
	http.StatusUnprocessableEntity:   "validation_failed",
	http.StatusTooManyRequests:       "rate_limited",
	http.StatusServiceUnavailable:    "unavailable",
}

// statusClientClosed is nginx's convention for a client that went away before the answer.
const statusClientClosed = 499

func toProblem(status int, msg string, errs []error) *problem.Error {
	if status == http.StatusInternalServerError {
		// A handler returned a plain error: a database outage is the client's to retry, a
		// client that left is nobody's fault, anything else is ours, described only in the log.
		for _, err := range errs {
			if err == nil {
				continue
			}
			if p, ok := problem.As(err); ok {
				return p
			}
			if errors.Is(err, context.Canceled) {
				return problem.New(statusClientClosed, "client_closed", "the client closed the request").WithCause(err)
			}
			if t, ok := problem.As(db.Translate(err, "resource")); ok {
				return t
			}
			return problem.Internal(err)
		}
		return problem.Internal(errors.New(msg))
	}
	code := statusCodes[status]
	if code == "" {
		code = strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_")
	}
	p := problem.New(status, code, "%s", msg)
	for _, err := range errs {
		if err == nil {
			continue
		}
		var d *huma.ErrorDetail
		if errors.As(err, &d) {
			// The value is never echoed back: it may be a password or a token.
			p = p.WithField(d.Location, d.Message)
			if status == http.StatusBadRequest && d.Location == "body" && looksLikeJSONError(d.Message) {
				p.Code = "malformed_json"
				p.Detail = "the request body is not valid JSON"
			}
			continue
		}
		p = p.WithField("", err.Error())
	}
	return p
}

func looksLikeJSONError(msg string) bool {
	for _, s := range []string{"invalid character", "unexpected end of JSON", "json:", "cannot unmarshal", "looking for beginning"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// stampProblem is a huma transformer: it adds the request id to problems on their way out
// and logs server-side failures with their cause.
func stampProblem(ctx huma.Context, _ string, v any) (any, error) {
	p, ok := v.(*problem.Error)
	if !ok {
		return v, nil
	}
	challengeHuma(ctx, p)
	return stamp(ctx.Context(), p), nil
}

func stamp(ctx context.Context, p *problem.Error) *problem.Error {
	c := p.Clone()
	c.RequestID = RequestID(ctx)
	if c.Status == http.StatusInternalServerError {
		// Only unexpected failures carry a cause worth logging; the access log line
		// records every 5xx.
		logger(ctx).Error("request failed", "code", c.Code, "cause", errorString(p.Unwrap()))
	}
	return c
}

func errorString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// writeProblem answers with err as a problem document, for handlers outside huma.
func writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	p, ok := problem.As(err)
	if !ok {
		p = toProblem(http.StatusInternalServerError, "", []error{err})
	}
	p = stamp(r.Context(), p)
	for k, vs := range p.GetHeaders() {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	if p.Status == http.StatusUnauthorized {
		for _, c := range challenge {
			w.Header().Add("WWW-Authenticate", c)
		}
	}
	w.Header().Set("Content-Type", problem.ContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	if r.Method == http.MethodHead {
		return
	}
	b, _ := json.Marshal(p)
	_, _ = w.Write(append(b, '\n'))
}

// unmatched answers requests no route takes: 405 with Allow when the path exists under
// other methods, 404 otherwise.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeProblem(w, r, problem.New(http.StatusMethodNotAllowed, "method_not_allowed",
			"%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", ")))
		return
	}
	writeProblem(w, r, problem.NotFound("route_not_found", "no route matches %s %s", r.Method, r.URL.Path))
}

func startingProblem() *problem.Error {
	return problem.Unavailable("starting", "strata is starting; retry shortly")
}
