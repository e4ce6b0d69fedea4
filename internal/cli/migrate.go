package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/stratadb/strata"
)

func cmdMigrate(stdio *IO) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply or inspect database migrations (serve applies them at start too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{fmt.Errorf("migrate needs a subcommand: up or status")}
		},
	}
	open := func(cmd *cobra.Command) (*strata.Strata, error) {
		e, err := setup(cmd, stdio)
		if err != nil {
			return nil, err
		}
		cfg, err := e.strataConfig()
		if err != nil {
			return nil, usageError{err}
		}
		cfg.SkipMigrations = true
		return strata.Open(cmd.Context(), cfg)
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "up",
		Short: "Apply every pending migration",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := open(cmd)
			if err != nil {
				return err
			}
			defer s.Close()
			applied, err := s.Migrate(cmd.Context())
			for _, id := range applied {
				fmt.Fprintf(stdio.Stdout, "applied %s\n", id)
			}
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintln(stdio.Stdout, "nothing to apply: the database is up to date")
			}
			return nil
		},
	}, &cobra.Command{
		Use:   "status",
		Short: "List migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := open(cmd)
			if err != nil {
				return err
			}
			defer s.Close()
			states, err := s.MigrationStatus(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(stdio.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MIGRATION\tSTATUS\tAPPLIED AT")
			pending := 0
			for _, st := range states {
				status, at := "applied", st.AppliedAt.UTC().Format(time.RFC3339)
				switch {
				case st.Unknown:
					status = "unknown (applied by a newer strata)"
				case st.Modified:
					status = "MODIFIED after it was applied"
				case st.AppliedAt.IsZero():
					status, at = "pending", "-"
					pending++
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", st.ID, status, at)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stdout, "%d migrations, %d pending\n", len(states), pending)
			return nil
		},
	})
	return cmd
}
