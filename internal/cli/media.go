package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/stratadb/strata/media"
	"golang.org/x/term"
)

// mediaStore opens the media store of kind ("file" or "s3") from the settings. For "file"
// it answers the file store in DATA_DIR/media.
func (e *env) mediaStore(kind string) (media.Store, error) {
	switch kind {
	case "", "file":
		return media.NewFileStore(filepath.Join(e.vals.str("data-dir"), "media"))
	case "s3":
		cfg := media.S3Config{Endpoint: e.vals.str("media-s3-endpoint"), Bucket: e.vals.str("media-s3-bucket"),
			Prefix: e.vals.str("media-s3-prefix"), Region: e.vals.str("media-s3-region"),
			AccessKey: e.vals.str("media-s3-access-key"), SecretKey: e.vals.str("media-s3-secret-key"),
			Insecure: e.vals.str("media-s3-insecure") == "true", CreateBucket: true}
		if cfg.Endpoint == "" || cfg.Bucket == "" {
			return nil, settingError("media-s3-endpoint", "and --media-s3-bucket are required for --media-store s3")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return media.NewS3Store(ctx, cfg)
	}
	return nil, settingError("media-store", "is file or s3")
}

func cmdMedia(stdio *IO) *cobra.Command {
	cmd := &cobra.Command{Use: "media", Short: "Media maintenance"}
	var to string
	var skipMissing bool
	migrate := &cobra.Command{
		Use:   "migrate-store",
		Short: "Copy every media blob from the configured store to another (--to file|s3), resumably, with a progress bar",
		Long: "migrate-store copies every original and variant from the store --media-store names to the store --to names " +
			"(configured by the same --media-s3-* settings), keeping their identifiers. Interrupted (crash, error, ^C), " +
			"it resumes where it stopped without reading finished blobs from the old store again. When every blob is " +
			"moved, the repository records the new store: nodes must then run with --media-store set to it (one " +
			"configured with the old store refuses to start). Run it while no node accepts uploads.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, e, err := openForMaintenance(cmd, stdio)
			if err != nil {
				return err
			}
			defer s.Close()
			if to == e.vals.str("media-store") || to == "" {
				return usageError{errors.New("--to names the new store (file or s3), other than --media-store")}
			}
			target, err := e.mediaStore(to)
			if err != nil {
				return err
			}
			var bar *progressbar.ProgressBar
			opt := &media.MigrateOptions{SkipMissing: skipMissing, Progress: func(done, total int64) {
				if out, ok := stdio.Stderr.(*os.File); ok && term.IsTerminal(int(out.Fd())) {
					if bar == nil {
						bar = progressbar.Default(total, "moving blobs")
					}
					_ = bar.Set64(done)
					return
				}
				fmt.Fprintf(stdio.Stderr, "\r%d of %d blobs", done, total)
			}}
			rep, err := s.Media().StoreMigrate(cmd.Context(), target, opt)
			if bar != nil {
				_ = bar.Finish()
			}
			fmt.Fprintln(stdio.Stderr)
			if err != nil {
				return fmt.Errorf("%w (run it again to resume: %d copied so far)", err, rep.Moved+rep.Skipped)
			}
			fmt.Fprintf(stdio.Stdout, "moved %d blobs (%d already moved by an earlier run, %d missing from the old store) to the %s store\n",
				rep.Moved, rep.Skipped, rep.Missing, target.Name())
			if rep.Switched {
				fmt.Fprintf(stdio.Stdout, "the repository now points at the %s store: start every node with --media-store %s "+
					"(a node started with another store refuses to start; a running one refuses new media until restarted)\n", to, to)
			}
			return nil
		},
	}
	migrate.Flags().StringVar(&to, "to", "", "the new store: file or s3")
	migrate.Flags().BoolVar(&skipMissing, "skip-missing", false, "continue past blobs missing from the old store")
	cmd.AddCommand(migrate)
	return cmd
}
