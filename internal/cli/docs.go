package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/graph"
	"golang.org/x/term"
)

func cmdImport(stdio *IO) *cobra.Command {
	var tenant, collection, mode, format string
	var edges bool
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Import NDJSON documents into a collection, or edges into the graph (FILE, or - for stdin), with a progress bar",
		Long: "import reads one JSON document per line (or, with --format export, lines written by `strata export`) and " +
			"writes them through COPY. By default one bad line imports nothing and every bad line is listed by number; " +
			"--mode partial imports the good lines. With --edges, each line is an edge " +
			"{\"type\", \"from\": \"collection/id\", \"to\": \"collection/id\", \"props\"}, imported all or nothing. " +
			"It runs beside `strata serve`, attached to its database.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tenant == "" || (collection == "") != edges {
				return usageError{errors.New("--tenant is required, and --collection (documents) or --edges (graph edges)")}
			}
			if edges && mode != "atomic" {
				return usageError{errors.New("an edge import is all or nothing (--mode atomic)")}
			}
			if mode != "atomic" && mode != "partial" || format != "docs" && format != "export" {
				return usageError{errors.New("--mode is atomic or partial; --format is docs or export")}
			}
			r := stdio.Stdin
			var size int64 = -1
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				if st, err := f.Stat(); err == nil {
					size = st.Size()
				}
				r = f
			}
			s, _, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			var bar *progressbar.ProgressBar
			if out, ok := stdio.Stderr.(*os.File); ok && term.IsTerminal(int(out.Fd())) {
				bar = progressbar.DefaultBytes(size, "importing")
				r = io.TeeReader(r, bar)
			}
			start := time.Now()
			opts := doc.ImportOptions{Partial: mode == "partial", Envelopes: format == "export", Progress: func(lines, imported int64) {
				if bar == nil {
					fmt.Fprintf(stdio.Stderr, "\r%d lines read, %d imported", lines, imported)
				}
			}}
			ctx := systemContext(auth.System(cmd.Context()), "import")
			var rep doc.ImportReport
			if edges {
				rep, err = s.Graph().EdgeImport(ctx, tenant, r, graph.ImportOptions{Progress: opts.Progress})
			} else {
				rep, err = s.Docs().DocImport(ctx, tenant, collection, r, opts)
			}
			if bar != nil {
				_ = bar.Finish()
			}
			fmt.Fprintln(stdio.Stderr)
			if err != nil {
				return err
			}
			secs := time.Since(start).Seconds()
			what := "documents"
			if edges {
				what = "edges"
			}
			fmt.Fprintf(stdio.Stdout, "%d lines, %d imported, %d failed in %.1fs (%.0f %s/s)\n",
				rep.Lines, rep.Imported, rep.Failed, secs, float64(rep.Imported)/max(secs, 1e-9), what)
			for _, e := range rep.Errors {
				fmt.Fprintf(stdio.Stdout, "line %d: %s: %s %s\n", e.Line, e.Code, e.Message, e.Pointer)
			}
			if rep.Failed > 0 {
				if !opts.Partial {
					return fmt.Errorf("nothing was imported: %d lines are bad (use --mode partial to import the rest)", rep.Failed)
				}
				return fmt.Errorf("%d lines were not imported", rep.Failed)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant id")
	cmd.Flags().StringVar(&collection, "collection", "", "collection name")
	cmd.Flags().BoolVar(&edges, "edges", false, "the lines are graph edges, not documents")
	cmd.Flags().StringVar(&mode, "mode", "atomic", "atomic (one bad line imports nothing) or partial")
	cmd.Flags().StringVar(&format, "format", "docs", "docs (each line a document) or export (lines of strata export)")
	return cmd
}

func cmdExport(stdio *IO) *cobra.Command {
	var tenant, collection, filterSrc, asOf string
	cmd := &cobra.Command{
		Use:   "export [FILE]",
		Short: "Export a collection as NDJSON (to FILE, or stdout), optionally filtered or as of a time",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tenant == "" || collection == "" {
				return usageError{errors.New("--tenant and --collection are required")}
			}
			var at time.Time
			if asOf != "" {
				t, err := time.Parse(time.RFC3339Nano, asOf)
				if err != nil {
					return usageError{fmt.Errorf("--as-of %q is not an RFC 3339 time", asOf)}
				}
				at = t
			}
			w := stdio.Stdout
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Create(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			s, _, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx := auth.System(cmd.Context())
			n, err := s.Docs().DocExport(ctx, tenant, collection, w, doc.ExportOptions{Filter: filterSrc, AsOf: at})
			if err != nil {
				return err
			}
			fmt.Fprintf(stdio.Stderr, "exported %d documents\n", n)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant id")
	cmd.Flags().StringVar(&collection, "collection", "", "collection name")
	cmd.Flags().StringVar(&filterSrc, "filter", "", "only documents matching this filter")
	cmd.Flags().StringVar(&asOf, "as-of", "", "the collection as it was at this RFC 3339 time")
	return cmd
}
