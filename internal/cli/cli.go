// Package cli is the strata command: serve, migrate, config, version. Main wires the
// process (arguments, environment, signals) to Run, which takes them injected so tests can
// drive the CLI in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/graph"
	"golang.org/x/term"
)

// IO is what a command reads and writes.
type IO struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Env looks up an environment variable; nil means the process environment.
	Env func(string) (string, bool)
}

// Main runs strata with the process's arguments and environment, and returns the exit
// code. The first SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once
// (an embedded PostgreSQL still shuts down on its parent-death signal).
func Main() int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "strata: second signal; exiting now")
		os.Exit(1)
	}()
	return Run(ctx, os.Args[1:], IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
}

// usageError marks errors in how strata was invoked (exit code 2).
type usageError struct{ error }

// Run executes the command line args and returns the exit code: 0 on success, 1 when the
// command failed, 2 when it was invoked wrongly.
func Run(ctx context.Context, args []string, stdio IO) int {
	if stdio.Env == nil {
		stdio.Env = os.LookupEnv
	}
	root := newRoot(&stdio)
	root.SetArgs(args)
	root.SetIn(stdio.Stdin)
	root.SetOut(stdio.Stdout)
	root.SetErr(stdio.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stdio.Stderr, "strata: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintln(stdio.Stderr, "Run 'strata --help' for usage.")
		return 2
	}
	return 1
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "unknown command", "flag needs an argument",
		"invalid argument \"", "accepts ", "requires at least", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func newRoot(stdio *IO) *cobra.Command {
	root := &cobra.Command{
		Use:   "strata",
		Short: "Strata: one PostgreSQL as the whole data backbone of an application",
		Long: "Strata serves documents, graph, search, queues, key-value, media, device readings and more " +
			"from one PostgreSQL, as a JSON HTTP API.\n\nEvery flag can also be set by its STRATA_* environment " +
			"variable or in a TOML file named by --config; flags win over the environment, which wins over the file.",
		SilenceUsage:  true,
		SilenceErrors: true,
		CompletionOptions: cobra.CompletionOptions{
			DisableDefaultCmd: true,
		},
	}
	bindFlags(root.PersistentFlags())
	root.AddCommand(cmdServe(stdio), cmdMigrate(stdio), cmdAdmin(stdio), cmdAudit(stdio), cmdImport(stdio), cmdExport(stdio), cmdConfig(stdio), cmdVersion(stdio),
		cmdMedia(stdio))
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	return root
}

// env is what every command gets: resolved settings and a logger.
type env struct {
	vals *values
	log  *slog.Logger
	io   *IO
}

func setup(cmd *cobra.Command, stdio *IO) (*env, error) {
	vals, err := resolve(cmd.Flags(), stdio.Env)
	if err != nil {
		return nil, usageError{err}
	}
	log, err := newLogger(vals, stdio.Stderr)
	if err != nil {
		return nil, usageError{err}
	}
	return &env{vals: vals, log: log, io: stdio}, nil
}

func newLogger(vals *values, w io.Writer) (*slog.Logger, error) {
	levelName, err := vals.oneOf("log-level", "debug", "info", "warn", "error")
	if err != nil {
		return nil, err
	}
	format, err := vals.oneOf("log-format", "auto", "text", "json")
	if err != nil {
		return nil, err
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(levelName))
	opts := &slog.HandlerOptions{Level: level}
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(w, opts)), nil
}

// strataConfig builds the library configuration from the settings.
func (e *env) strataConfig() (strata.Config, error) {
	wait, err := e.vals.duration("database-wait")
	if err != nil {
		return strata.Config{}, err
	}
	maxConns, err := e.vals.positiveInt("database-max-conns")
	if err != nil {
		return strata.Config{}, err
	}
	pgListen, err := e.vals.hostPort("pg-listen", true)
	if err != nil {
		return strata.Config{}, err
	}
	accessTTL, err := e.vals.duration("access-token-ttl")
	if err != nil {
		return strata.Config{}, err
	}
	refreshTTL, err := e.vals.duration("refresh-token-ttl")
	if err != nil {
		return strata.Config{}, err
	}
	seriesCfg, err := e.seriesConfig()
	if err != nil {
		return strata.Config{}, err
	}
	graphCfg, err := e.graphConfig()
	if err != nil {
		return strata.Config{}, err
	}
	mediaStore, err := e.mediaStore(e.vals.str("media-store"))
	if err != nil {
		return strata.Config{}, err
	}
	return strata.Config{
		DatabaseURL:  e.vals.str("database-url"),
		DataDir:      e.vals.str("data-dir"),
		DatabaseWait: wait,
		MaxConns:     int32(min(maxConns, 10000)),
		Postgres: strata.PostgresConfig{
			BinDir:     e.vals.str("pg-bin"),
			User:       e.vals.str("pg-user"),
			ListenAddr: pgListen,
		},
		AdminPassword:  e.vals.str("admin-password"),
		OnAdminCreated: e.printAdmin,
		Auth:           auth.Config{AccessTTL: accessTTL, RefreshTTL: refreshTTL},
		Series:         seriesCfg,
		Graph:          graphCfg,
		MediaStore:     mediaStore,
		Logger:         e.log,
	}, nil
}

// graphConfig builds the graph's bounds from the settings.
func (e *env) graphConfig() (graph.Config, error) {
	depth, err := e.vals.positiveInt("graph-max-depth")
	if err != nil {
		return graph.Config{}, err
	}
	results, err := e.vals.positiveInt("graph-max-results")
	if err != nil {
		return graph.Config{}, err
	}
	budget, err := e.vals.duration("graph-time-budget")
	if err != nil || budget == 0 {
		return graph.Config{}, settingError("graph-time-budget", "%q is not a positive duration such as 10s", e.vals.str("graph-time-budget"))
	}
	memEdges, err := e.vals.wholeInt("graph-memory-edges")
	if err != nil {
		return graph.Config{}, err
	}
	if memEdges <= 0 {
		memEdges = -1 // graph.Config reads 0 as its default
	}
	return graph.Config{MaxDepth: depth, MaxResults: results, TimeBudget: budget, MemoryEdges: memEdges}, nil
}

// printAdmin shows the first administrator's generated password, once, on stderr (not in
// the log, where secrets never go).
func (e *env) printAdmin(username, generated string) {
	if generated == "" {
		e.log.Info("created the first administrator with the password from --admin-password", "username", username)
		return
	}
	fmt.Fprintf(e.io.Stderr, "\n"+
		"  Created the first administrator.\n"+
		"    username: %s\n"+
		"    password: %s\n"+
		"  This password is shown only now. Change it with `strata admin reset-password --username %s`.\n\n",
		username, generated, username)
}

func cmdVersion(stdio *IO) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(stdio.Stdout, "strata %s (%s %s/%s)\n", strata.Version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

func cmdConfig(stdio *IO) *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration, secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := setup(cmd, stdio)
			if err != nil {
				return err
			}
			e.vals.print(stdio.Stdout)
			return nil
		},
	}
}
