package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"math/big"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// User is an account.
type User struct {
	ID          string     `json:"id"`
	Username    string     `json:"username"`
	Email       *string    `json:"email,omitempty"`
	IsAdmin     bool       `json:"is_admin" doc:"Platform administrator: manages users and sees every tenant."`
	Disabled    bool       `json:"disabled"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	LastLoginAt *time.Time `json:"last_login_at,omitempty"`
}

const userColumns = `id, username, email, is_admin, disabled, created_at, updated_at, last_login_at`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Username, &u.Email, &u.IsAdmin, &u.Disabled, &u.CreatedAt, &u.UpdatedAt, &u.LastLoginAt)
	return u, err
}

// userState is what a request needs to know about its user.
type userState struct {
	id       string
	username string
	version  int64
	disabled bool
	admin    bool
	exists   bool
}

func (s *Service) loadUser(ctx context.Context, id string) (userState, error) {
	st := userState{id: id}
	err := s.pool.QueryRow(ctx, `SELECT username, cred_version, disabled, is_admin FROM users WHERE id = $1`, id).
		Scan(&st.username, &st.version, &st.disabled, &st.admin)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	st.exists = err == nil
	return st, err
}

var errBadCredentials = problem.Unauthenticated("invalid_credentials", "the username or password is wrong")

type credentialUser struct {
	id, username string
	version      int64
}

// checkCredentials verifies a username and password, rate-limited per username and ip,
// auditing failures. Unknown users and wrong passwords cost the same and answer the same.
func (s *Service) checkCredentials(ctx context.Context, username, password, ip string) (credentialUser, error) {
	if wait, ok := s.limits.allow(username, ip); !ok {
		_ = s.audit.Record(ctx, audit.Entry{Action: "auth.signin_throttled", ResourceType: "user",
			Details: map[string]any{"username": truncate(username, 64)}})
		return credentialUser{}, problem.RateLimited("too_many_attempts", wait, "too many sign-in attempts; retry later")
	}
	var u credentialUser
	var hash string
	var disabled bool
	err := s.pool.QueryRow(ctx, `SELECT id, username, password_hash, cred_version, disabled FROM users WHERE lower(username) = lower($1)`,
		username).Scan(&u.id, &u.username, &hash, &u.version, &disabled)
	if errors.Is(err, pgx.ErrNoRows) {
		s.equalizeTiming(ctx, password)
		s.auditFailure(ctx, username, "", "unknown user")
		return u, errBadCredentials
	}
	if err != nil {
		return u, db.Translate(err, "user")
	}
	ok, err := s.verifyPassword(ctx, hash, password)
	if err != nil {
		return u, err
	}
	if !ok || disabled {
		reason := "wrong password"
		if ok {
			reason = "user disabled"
		}
		s.auditFailure(ctx, username, u.id, reason)
		return u, errBadCredentials // a disabled account is not revealed either
	}
	return u, nil
}

func (s *Service) auditFailure(ctx context.Context, username, userID, reason string) {
	err := s.audit.Record(ctx, audit.Entry{Action: "auth.signin_failed", ResourceType: "user", ResourceID: userID,
		Details: map[string]any{"username": truncate(username, 64), "reason": reason}})
	if err != nil {
		s.log.Warn("recording a failed sign-in", "err", err)
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

var usernameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

func checkUsername(name string) error {
	if !usernameRE.MatchString(name) {
		return problem.Unprocessable("invalid_username", "a username is 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit").
			WithField("body.username", "invalid")
	}
	return nil
}

func checkEmail(email *string) error {
	if email == nil {
		return nil
	}
	at := strings.IndexByte(*email, '@')
	if at < 1 || at == len(*email)-1 || len(*email) > 254 || strings.ContainsAny(*email, " \t\r\n") {
		return problem.Unprocessable("invalid_email", "the email address is not valid").WithField("body.email", "invalid")
	}
	return nil
}

// UserInput creates a user.
type UserInput struct {
	Username string  `json:"username" minLength:"1" maxLength:"64"`
	Email    *string `json:"email,omitempty" maxLength:"254"`
	Password string  `json:"password" minLength:"1" maxLength:"1024" doc:"8 to 1024 characters."`
	IsAdmin  bool    `json:"is_admin,omitempty"`
}

// UserCreate creates a user. Usernames are unique regardless of case.
func (s *Service) UserCreate(ctx context.Context, in UserInput) (User, error) {
	if err := checkUsername(in.Username); err != nil {
		return User{}, err
	}
	if err := checkEmail(in.Email); err != nil {
		return User{}, err
	}
	if err := checkPassword(in.Password, in.Username); err != nil {
		return User{}, err
	}
	hash, err := s.hashPassword(ctx, in.Password)
	if err != nil {
		return User{}, err
	}
	var u User
	err = s.inTx(ctx, "user "+in.Username, func(tx pgx.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRow(ctx, `INSERT INTO users (id, username, email, password_hash, is_admin)
			VALUES ($1, $2, $3, $4, $5) RETURNING `+userColumns, uuid.Must(uuid.NewV7()).String(), in.Username, in.Email, hash, in.IsAdmin))
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: "user.create", ResourceType: "user", ResourceID: u.ID,
			Details: map[string]any{"username": u.Username, "is_admin": u.IsAdmin}})
	})
	if problem.HasCode(err, "already_exists") {
		return User{}, problem.Conflict("username_taken", "the username %q (or the email) is already taken", in.Username)
	}
	return u, err
}

// UserGet returns a user by id.
func (s *Service) UserGet(ctx context.Context, id string) (User, error) {
	if _, err := uuid.Parse(id); err != nil {
		return User{}, userNotFound()
	}
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, userNotFound()
	}
	return u, db.Translate(err, "user")
}

// UserByName returns a user by username (any case).
func (s *Service) UserByName(ctx context.Context, username string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE lower(username) = lower($1)`, username))
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, userNotFound()
	}
	return u, db.Translate(err, "user")
}

func userNotFound() error { return problem.NotFound("user_not_found", "user not found") }

// UserList lists users by username, after the given username (a keyset cursor).
func (s *Service) UserList(ctx context.Context, after string, limit int) ([]User, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+userColumns+` FROM users WHERE lower(username) > lower($1)
		ORDER BY lower(username) LIMIT $2`, after, limit)
	if err != nil {
		return nil, db.Translate(err, "users")
	}
	users, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (User, error) { return scanUser(r) })
	return users, db.Translate(err, "users")
}

// UserUpdate changes what is set in the update. Disabling a user ends their sessions and
// cached credentials at once.
type UserUpdate struct {
	Email    *string `json:"email,omitempty" maxLength:"254"`
	IsAdmin  *bool   `json:"is_admin,omitempty"`
	Disabled *bool   `json:"disabled,omitempty"`
}

// UserUpdate applies an update to a user. The last enabled platform admin cannot be
// demoted or disabled.
func (s *Service) UserUpdate(ctx context.Context, id string, in UserUpdate) (User, error) {
	if err := checkEmail(in.Email); err != nil {
		return User{}, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return User{}, userNotFound()
	}
	var u User
	err := s.inTx(ctx, "user", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", adminLock); err != nil {
			return err
		}
		before, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return userNotFound()
		}
		if err != nil {
			return err
		}
		losesAdmin := before.IsAdmin && !before.Disabled && ((in.IsAdmin != nil && !*in.IsAdmin) || (in.Disabled != nil && *in.Disabled))
		if losesAdmin {
			if err := lastAdminCheck(ctx, tx, id); err != nil {
				return err
			}
		}
		bump := in.Disabled != nil && *in.Disabled != before.Disabled
		u, err = scanUser(tx.QueryRow(ctx, `UPDATE users SET email = COALESCE($2, email), is_admin = COALESCE($3, is_admin),
			disabled = COALESCE($4, disabled), cred_version = cred_version + CASE WHEN $5 THEN 1 ELSE 0 END, updated_at = now()
			WHERE id = $1 RETURNING `+userColumns, id, in.Email, in.IsAdmin, in.Disabled, bump))
		if err != nil {
			return err
		}
		if err := s.notify(ctx, tx, "user:"+id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: "user.update", ResourceType: "user", ResourceID: id,
			Details: map[string]any{"email_set": in.Email != nil, "is_admin": in.IsAdmin, "disabled": in.Disabled}})
	})
	if problem.HasCode(err, "already_exists") {
		return User{}, problem.Conflict("email_taken", "the email is already used by another user")
	}
	return u, err
}

// adminLock serializes changes that could remove the last platform admin.
const adminLock int64 = 0x5374726174614164 // "StrataAd"

func lastAdminCheck(ctx context.Context, tx pgx.Tx, exceptID string) error {
	var others int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM users WHERE is_admin AND NOT disabled AND id <> $1`, exceptID).Scan(&others); err != nil {
		return err
	}
	if others == 0 {
		return problem.Conflict("last_admin", "this is the last enabled platform administrator; make another one first")
	}
	return nil
}

// UserDelete deletes a user, their memberships, grants and sessions. The last enabled
// platform admin cannot be deleted.
func (s *Service) UserDelete(ctx context.Context, id string) error {
	if _, err := uuid.Parse(id); err != nil {
		return userNotFound()
	}
	return s.inTx(ctx, "user", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", adminLock); err != nil {
			return err
		}
		var name string
		var admin, disabled bool
		err := tx.QueryRow(ctx, `SELECT username, is_admin, disabled FROM users WHERE id = $1 FOR UPDATE`, id).Scan(&name, &admin, &disabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return userNotFound()
		}
		if err != nil {
			return err
		}
		if admin && !disabled {
			if err := lastAdminCheck(ctx, tx, id); err != nil {
				return err
			}
		}
		// The last owner of a tenant cannot leave it ownerless.
		var owned string
		err = tx.QueryRow(ctx, `SELECT m.tenant_id::text FROM memberships m WHERE m.user_id = $1 AND m.role = 'owner'
			AND NOT EXISTS (SELECT 1 FROM memberships o WHERE o.tenant_id = m.tenant_id AND o.role = 'owner' AND o.user_id <> $1)
			LIMIT 1`, id).Scan(&owned)
		if err == nil {
			return problem.Conflict("last_owner", "the user is the last owner of tenant %s; give it another owner or delete it first", owned)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var tenants []string
		rows, err := tx.Query(ctx, `SELECT tenant_id::text FROM memberships WHERE user_id = $1`, id)
		if err != nil {
			return err
		}
		if tenants, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM users WHERE id = $1`, id); err != nil {
			return err
		}
		for _, t := range tenants {
			if err := s.notify(ctx, tx, "access:"+t); err != nil {
				return err
			}
		}
		if err := s.notify(ctx, tx, "user:"+id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: "user.delete", ResourceType: "user", ResourceID: id,
			Details: map[string]any{"username": name}})
	})
}

// PasswordSet sets a user's password (an administrator's reset, or the user's own change
// after CheckPassword). Every session and cached credential of the user stops working.
func (s *Service) PasswordSet(ctx context.Context, id, password string) error {
	u, err := s.UserGet(ctx, id)
	if err != nil {
		return err
	}
	if err := checkPassword(password, u.Username); err != nil {
		return err
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return err
	}
	return s.inTx(ctx, "user", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2, cred_version = cred_version + 1, updated_at = now() WHERE id = $1`,
			id, hash); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE sessions SET revoked_at = now(), revoke_reason = 'password changed'
			WHERE user_id = $1 AND revoked_at IS NULL`, id); err != nil {
			return err
		}
		if err := s.notify(ctx, tx, "user:"+id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Action: "user.password_change", ResourceType: "user", ResourceID: id})
	})
}

// PasswordChange changes the user's own password after checking the current one.
func (s *Service) PasswordChange(ctx context.Context, id, current, next, ip string) error {
	u, err := s.UserGet(ctx, id)
	if err != nil {
		return err
	}
	if _, err := s.checkCredentials(ctx, u.Username, current, ip); err != nil {
		if problem.HasCode(err, "invalid_credentials") {
			return problem.Forbidden("wrong_password", "the current password is wrong")
		}
		return err
	}
	return s.PasswordSet(ctx, id, next)
}

// EnsureAdmin creates the user "admin" as a platform administrator when the database has
// no users at all. It uses password, or generates one and returns it (to be shown once).
// It reports whether it created the user.
func (s *Service) EnsureAdmin(ctx context.Context, password string) (created bool, generated string, err error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM users LIMIT 1) u`).Scan(&n); err != nil || n > 0 {
		return false, "", db.Translate(err, "users")
	}
	if password == "" {
		generated = GeneratePassword()
		password = generated
	}
	if err := checkPassword(password, "admin"); err != nil {
		return false, "", err
	}
	hash, err := s.hashPassword(ctx, password)
	if err != nil {
		return false, "", err
	}
	err = s.inTx(ctx, "user admin", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", adminLock); err != nil {
			return err
		}
		id := uuid.Must(uuid.NewV7()).String()
		tag, err := tx.Exec(ctx, `INSERT INTO users (id, username, password_hash, is_admin) SELECT $1, 'admin', $2, true
			WHERE NOT EXISTS (SELECT 1 FROM users)`, id, hash)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		created = true
		return audit.Record(ctx, tx, audit.Entry{Action: "user.create", ResourceType: "user", ResourceID: id,
			Details: map[string]any{"username": "admin", "is_admin": true, "first_admin": true}})
	})
	if !created {
		generated = ""
	}
	return created, generated, err
}

// GeneratePassword returns a random 24-character password.
func GeneratePassword() string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 24)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[n.Int64()]
	}
	return string(b)
}
