package auth

import (
	"time"

	"github.com/stratadb/strata/problem"
)

// Date is a calendar date in UTC, "YYYY-MM-DD".
type Date string

func (d *Date) parse(field string) (*time.Time, error) {
	if d == nil {
		return nil, nil
	}
	t, err := time.Parse(time.DateOnly, string(*d))
	if err != nil {
		return nil, problem.Unprocessable("invalid_date", "%s must be a date like 2025-01-31", field).WithField("body."+field, "not a date")
	}
	return &t, nil
}

func dateOrNil(t *time.Time) *Date {
	if t == nil {
		return nil
	}
	d := Date(t.UTC().Format(time.DateOnly))
	return &d
}
