package auth

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/stratadb/strata/problem"
	"golang.org/x/crypto/argon2"
)

// Argon2Params is the cost of hashing a password with argon2id. Hashes record their own
// parameters (PHC string format), so changing these affects new hashes only.
type Argon2Params struct {
	// MemoryKiB is the memory per hash. Default 65536 (64 MiB).
	MemoryKiB uint32
	// Time is the number of passes. Default 1.
	Time uint32
	// Threads is the parallelism. Default 2.
	Threads uint8
}

// Defaults returns p with zero fields set to the defaults.
func (p Argon2Params) Defaults() Argon2Params { return p.withDefaults() }

func (p Argon2Params) withDefaults() Argon2Params {
	p.MemoryKiB = cmp.Or(p.MemoryKiB, 64*1024)
	p.Time = cmp.Or(p.Time, 1)
	p.Threads = cmp.Or(p.Threads, 2)
	return p
}

const (
	saltLen = 16
	keyLen  = 32
	// MinPasswordLen and MaxPasswordLen bound a password's length in characters.
	MinPasswordLen = 8
	MaxPasswordLen = 1024
)

// hashPassword returns the PHC-format argon2id hash of password. At most GOMAXPROCS hashes
// run at once, bounding memory (MemoryKiB each) under a burst of sign-ins.
func (s *Service) hashPassword(ctx context.Context, password string) (string, error) {
	salt := make([]byte, saltLen)
	_, _ = rand.Read(salt)
	p := s.cfg.Argon2
	if err := s.acquireArgon(ctx); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	<-s.argonSlot
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

func (s *Service) acquireArgon(ctx context.Context) error {
	select {
	case s.argonSlot <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// verifyPassword reports whether password matches the PHC hash, in constant time.
func (s *Service) verifyPassword(ctx context.Context, hash, password string) (bool, error) {
	p, salt, want, err := parseHash(hash)
	if err != nil {
		return false, err
	}
	if err := s.acquireArgon(ctx); err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	<-s.argonSlot
	s.verifications.Add(1)
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// PasswordVerifications counts argon2 verifications since start: sign-ins and Basic
// credentials not yet cached. It is exported as a metric.
func (s *Service) PasswordVerifications() int64 { return s.verifications.Load() }

// equalizeTiming burns one verification with the current parameters against a dummy hash,
// so an unknown username takes as long to refuse as a wrong password.
func (s *Service) equalizeTiming(ctx context.Context, password string) {
	_, _ = s.verifyPassword(ctx, s.dummy(), password)
}

func (s *Service) dummy() string {
	p := s.cfg.Argon2
	return fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$c3RyYXRhLWR1bW15LXNhbHQ$3bRwXJjvq3b6y1mJm3qf6qH2o9zI0k6x8l1QkG0wR7s", p.MemoryKiB, p.Time, p.Threads)
}

var errBadHash = errors.New("unreadable password hash")

func parseHash(h string) (Argon2Params, []byte, []byte, error) {
	parts := strings.Split(h, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return Argon2Params{}, nil, nil, errBadHash
	}
	var v int
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return p, nil, nil, errBadHash
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return p, nil, nil, errBadHash
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	key, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(key) == 0 || p.Time == 0 || p.Threads == 0 || p.MemoryKiB < 8 {
		return p, nil, nil, errBadHash
	}
	return p, salt, key, nil
}

// checkPassword enforces the password policy: 8 to 1024 characters, not the username.
func checkPassword(password, username string) error {
	n := utf8.RuneCountInString(password)
	switch {
	case n < MinPasswordLen:
		return problem.Unprocessable("weak_password", "the password must have at least %d characters", MinPasswordLen).
			WithField("body.password", "too short")
	case n > MaxPasswordLen:
		return problem.Unprocessable("weak_password", "the password must have at most %d characters", MaxPasswordLen).
			WithField("body.password", "too long")
	case strings.EqualFold(password, username):
		return problem.Unprocessable("weak_password", "the password must not be the username").
			WithField("body.password", "equals the username")
	}
	return nil
}
