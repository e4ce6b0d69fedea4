package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"golang.org/x/term"
)

// openForMaintenance opens the platform for a maintenance command: beside a running
// `strata serve` it attaches to that server's embedded PostgreSQL.
func openForMaintenance(cmd *cobra.Command, stdio *IO) (*strata.Strata, *env, error) {
	e, err := setup(cmd, stdio)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := e.strataConfig()
	if err != nil {
		return nil, nil, usageError{err}
	}
	cfg.Attach = true
	s, err := strata.Open(cmd.Context(), cfg)
	return s, e, err
}

// systemContext is the context of CLI actions: the audit log names the operator's
// command, not a user.
func systemContext(ctx context.Context, what string) context.Context {
	return audit.WithActor(ctx, audit.Actor{Name: "cli:" + what})
}

// readPassword takes a password piped on stdin, or generates one when stdin is a terminal
// or empty (the generated password is printed).
func readPassword(stdin io.Reader) (password string, generated bool, err error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return auth.GeneratePassword(), true, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", false, err
	}
	if line = strings.TrimRight(line, "\r\n"); line == "" {
		return auth.GeneratePassword(), true, nil
	}
	return line, false, nil
}

func cmdAdmin(stdio *IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Manage users and signing keys from the command line",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return usageError{errors.New("admin needs a subcommand: create, reset-password or rotate-signing-key")}
		},
	}
	var username, email string
	var platformAdmin bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a user; the password is read from stdin, or generated and printed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if username == "" {
				return usageError{errors.New("--username is required")}
			}
			password, generated, err := readPassword(stdio.Stdin)
			if err != nil {
				return err
			}
			s, _, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			in := auth.UserInput{Username: username, Password: password, IsAdmin: platformAdmin}
			if email != "" {
				in.Email = &email
			}
			u, err := s.Auth().UserCreate(systemContext(cmd.Context(), "admin create"), in)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stdout, "created user %s (id %s, platform admin: %v)\n", u.Username, u.ID, u.IsAdmin)
			if generated {
				fmt.Fprintf(stdio.Stdout, "password: %s\n", password)
			}
			return nil
		},
	}
	create.Flags().StringVar(&username, "username", "", "the new user's name")
	create.Flags().StringVar(&email, "email", "", "the new user's email (optional)")
	create.Flags().BoolVar(&platformAdmin, "platform-admin", false, "make the user a platform administrator")

	var resetUser string
	reset := &cobra.Command{
		Use:   "reset-password",
		Short: "Set a user's password (read from stdin, or generated and printed); ends their sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if resetUser == "" {
				return usageError{errors.New("--username is required")}
			}
			password, generated, err := readPassword(stdio.Stdin)
			if err != nil {
				return err
			}
			s, _, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx := systemContext(cmd.Context(), "admin reset-password")
			u, err := s.Auth().UserByName(ctx, resetUser)
			if err != nil {
				return err
			}
			if err := s.Auth().PasswordSet(ctx, u.ID, password); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stdout, "password of %s changed; their sessions are ended\n", u.Username)
			if generated {
				fmt.Fprintf(stdio.Stdout, "password: %s\n", password)
			}
			return nil
		},
	}
	reset.Flags().StringVar(&resetUser, "username", "", "whose password to set")

	rotate := &cobra.Command{
		Use:   "rotate-signing-key",
		Short: "Start signing access tokens with a new key (tokens already issued stay valid until they expire)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, _, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			kid, err := s.Auth().SigningKeyRotate(systemContext(cmd.Context(), "admin rotate-signing-key"))
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stdout, "new signing key %s is current on every node\n", kid)
			return nil
		},
	}
	cmd.AddCommand(create, reset, rotate)
	return cmd
}

func cmdAudit(stdio *IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify or purge the audit log",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return usageError{errors.New("audit needs a subcommand: verify or purge")}
		},
	}
	var tenant string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify a tenant's (or the platform's) hash chain; exit 1 at the first broken link",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, _, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			// Seal what is pending first, so the report covers every committed entry.
			for {
				n, err := s.Audit().Seal(cmd.Context(), 5000)
				if err != nil {
					return err
				}
				if n == 0 {
					break
				}
			}
			rep, err := s.Audit().Verify(cmd.Context(), tenant)
			if err != nil {
				return err
			}
			chain := "platform"
			if tenant != "" {
				chain = "tenant " + tenant
			}
			if !rep.OK {
				return fmt.Errorf("audit chain of %s is BROKEN at entry %d (id %s): %s; %d entries verified before it",
					chain, rep.Broken.Seq, rep.Broken.ID, rep.Broken.Reason, rep.Checked)
			}
			fmt.Fprintf(stdio.Stdout, "audit chain of %s is intact: %d entries verified (seq %d to %d), %d not yet sealed\n",
				chain, rep.Checked, rep.FirstSeq, rep.LastSeq, rep.Unsealed)
			return nil
		},
	}
	verify.Flags().StringVar(&tenant, "tenant", "", "tenant id (default: the platform chain)")

	var purgeTenant, before string
	purge := &cobra.Command{
		Use:   "purge",
		Short: "Delete audit entries older than a date (retention); the purge itself is audited",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cut, err := time.Parse(time.DateOnly, before)
			if err != nil {
				if cut, err = time.Parse(time.RFC3339, before); err != nil {
					return usageError{fmt.Errorf("--before %q is not a date (2025-01-31) or an RFC 3339 time", before)}
				}
			}
			s, _, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			n, err := s.Audit().Purge(systemContext(cmd.Context(), "audit purge"), purgeTenant, cut)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stdout, "purged %d entries older than %s\n", n, cut.UTC().Format(time.RFC3339))
			return nil
		},
	}
	purge.Flags().StringVar(&purgeTenant, "tenant", "", "tenant id (default: the platform chain)")
	purge.Flags().StringVar(&before, "before", "", "purge entries older than this date or time (required)")
	_ = purge.MarkFlagRequired("before")
	cmd.AddCommand(verify, purge)
	return cmd
}
