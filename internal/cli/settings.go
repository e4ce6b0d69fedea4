package cli

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
	"github.com/stratadb/strata/internal/db"
)

// setting is one configuration value: a flag, an environment variable and a config-file
// key, with a default. Precedence: flag, then environment, then file, then default.
type setting struct {
	name   string // flag name and config-file key
	env    string
	def    string
	usage  string
	redact func(string) string // how `strata config` shows a secret; nil shows it as is
}

// settings is the table of every setting the CLI knows.
var settings = []setting{
	{name: "config", env: "STRATA_CONFIG", usage: "path of a TOML config file whose keys are these flag names"},
	{name: "data-dir", env: "STRATA_DATA_DIR", def: "./strata-data", usage: "directory for Strata's local state (embedded PostgreSQL, files)"},
	{name: "http-addr", env: "STRATA_HTTP_ADDR", def: "127.0.0.1:8080", usage: "address the HTTP API listens on"},
	{name: "database-url", env: "STRATA_DATABASE_URL", usage: "external PostgreSQL 14+ to use instead of the embedded one", redact: db.Redact},
	{name: "database-wait", env: "STRATA_DATABASE_WAIT", def: "30s", usage: "how long to retry an unreachable database at start"},
	{name: "database-max-conns", env: "STRATA_DATABASE_MAX_CONNS", def: "16", usage: "maximum connections in the database pool"},
	{name: "pg-bin", env: "STRATA_PG_BIN", usage: "directory of the PostgreSQL server binaries for the embedded database (default: discovered)"},
	{name: "pg-user", env: "STRATA_PG_USER", usage: "OS user the embedded PostgreSQL runs as when strata runs as root (default postgres, then nobody)"},
	{name: "pg-listen", env: "STRATA_PG_LISTEN", usage: "also serve the embedded PostgreSQL over TCP on this address (default: unix socket only)"},
	{name: "http-read-timeout", env: "STRATA_HTTP_READ_TIMEOUT", def: "60s", usage: "maximum time to read a request, body included"},
	{name: "http-write-timeout", env: "STRATA_HTTP_WRITE_TIMEOUT", def: "60s", usage: "maximum time to write a response (streams extend their own)"},
	{name: "http-idle-timeout", env: "STRATA_HTTP_IDLE_TIMEOUT", def: "120s", usage: "close keep-alive connections idle this long"},
	{name: "shutdown-timeout", env: "STRATA_SHUTDOWN_TIMEOUT", def: "30s", usage: "how long a graceful shutdown waits for in-flight requests"},
	{name: "admin-password", env: "STRATA_ADMIN_PASSWORD", usage: "password of the first administrator, created on a database with no users (default: generated and printed once)", redact: secret},
	{name: "access-token-ttl", env: "STRATA_ACCESS_TOKEN_TTL", def: "15m", usage: "lifetime of access tokens"},
	{name: "refresh-token-ttl", env: "STRATA_REFRESH_TOKEN_TTL", def: "720h", usage: "lifetime of a sign-in session (its refresh tokens)"},
	{name: "graph-max-depth", env: "STRATA_GRAPH_MAX_DEPTH", def: "100", usage: "the deepest a graph traversal may go"},
	{name: "graph-max-results", env: "STRATA_GRAPH_MAX_RESULTS", def: "100000", usage: "the most nodes or paths a graph traversal may return"},
	{name: "graph-time-budget", env: "STRATA_GRAPH_TIME_BUDGET", def: "10s", usage: "how long a graph traversal may run before it answers 422 (or partial results)"},
	{name: "graph-memory-edges", env: "STRATA_GRAPH_MEMORY_EDGES", def: "20000000", usage: "the most graph nodes plus edges this node holds in its in-memory traversal indexes, across tenants; 0 disables them"},
	{name: "log-level", env: "STRATA_LOG_LEVEL", def: "info", usage: "debug, info, warn or error"},
	{name: "log-format", env: "STRATA_LOG_FORMAT", def: "auto", usage: "text, json, or auto (text on a terminal, JSON otherwise)"},
	// Device readings (series); read by seriesConfig in series.go.
	{name: "mqtt-addr", env: "STRATA_MQTT_ADDR", def: "127.0.0.1:1883", usage: "address of the embedded MQTT broker for devices; \"off\" disables it"},
	{name: "mqtt-broker-url", env: "STRATA_MQTT_BROKER_URL", usage: "external MQTT v5 broker to consume device topics from (mqtt://user:password@host:1883)", redact: db.Redact},
	{name: "mqtt-client-id", env: "STRATA_MQTT_CLIENT_ID", usage: "this node's client id on the external broker; stable and distinct per node (default strata-<host name>)"},
	{name: "redis-url", env: "STRATA_REDIS_URL", usage: "Redis for the latest-value cache and the readings stream (redis://host:6379/0)", redact: db.Redact},
	{name: "redis-stream", env: "STRATA_REDIS_STREAM", def: "strata:readings", usage: "Redis stream of device messages consumed when --redis-url is set"},
	// Media; read by mediaStore in media.go.
	{name: "media-store", env: "STRATA_MEDIA_STORE", def: "file", usage: "where media blobs live: file (DATA_DIR/media) or s3"},
	{name: "media-s3-endpoint", env: "STRATA_MEDIA_S3_ENDPOINT", usage: "S3-compatible server host[:port] for --media-store s3"},
	{name: "media-s3-bucket", env: "STRATA_MEDIA_S3_BUCKET", usage: "bucket of the media store (created when missing)"},
	{name: "media-s3-prefix", env: "STRATA_MEDIA_S3_PREFIX", usage: "key prefix of media objects"},
	{name: "media-s3-region", env: "STRATA_MEDIA_S3_REGION", usage: "bucket region (default: discovered)"},
	{name: "media-s3-access-key", env: "STRATA_MEDIA_S3_ACCESS_KEY", usage: "S3 access key"},
	{name: "media-s3-secret-key", env: "STRATA_MEDIA_S3_SECRET_KEY", usage: "S3 secret key", redact: secret},
	{name: "media-s3-insecure", env: "STRATA_MEDIA_S3_INSECURE", def: "false", usage: "talk plain HTTP to the S3 server"},
}

func secret(v string) string {
	if v == "" {
		return ""
	}
	return "xxxxx"
}

func lookupSetting(name string) *setting {
	for i := range settings {
		if settings[i].name == name {
			return &settings[i]
		}
	}
	return nil
}

// values are the effective settings and where each came from.
type values struct {
	v      map[string]string
	source map[string]string
}

func bindFlags(fs *pflag.FlagSet) {
	for _, s := range settings {
		usage := s.usage + " [" + s.env + "]"
		fs.String(s.name, s.def, usage)
	}
}

// resolve computes every setting from the flags, the environment and the config file.
func resolve(fs *pflag.FlagSet, env func(string) (string, bool)) (*values, error) {
	vals := &values{v: map[string]string{}, source: map[string]string{}}
	for _, s := range settings {
		vals.v[s.name], vals.source[s.name] = s.def, "default"
	}
	pick := func(name string) (string, string, bool) {
		if f := fs.Lookup(name); f != nil && f.Changed {
			return f.Value.String(), "flag --" + name, true
		}
		if v, ok := env(lookupSetting(name).env); ok {
			return v, "env " + lookupSetting(name).env, true
		}
		return "", "", false
	}
	if path, src, ok := pick("config"); ok && path != "" {
		vals.v["config"], vals.source["config"] = path, src
		if err := readFile(path, vals); err != nil {
			return nil, err
		}
	}
	for _, s := range settings {
		if v, src, ok := pick(s.name); ok {
			vals.v[s.name], vals.source[s.name] = v, src
		}
	}
	return vals, nil
}

func readFile(path string, vals *values) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("config file %s:%d:%d: %s", path, row, col, de.Error())
		}
		return fmt.Errorf("config file %s: %w", path, err)
	}
	for _, k := range sortedKeys(m) {
		name := strings.ReplaceAll(k, "_", "-")
		s := lookupSetting(name)
		if s == nil || name == "config" {
			return fmt.Errorf("config file %s: unknown setting %q (see `strata config` for the list)", path, k)
		}
		switch v := m[k].(type) {
		case string:
			vals.v[name] = v
		case int64:
			vals.v[name] = strconv.FormatInt(v, 10)
		case bool:
			vals.v[name] = strconv.FormatBool(v)
		default:
			return fmt.Errorf("config file %s: %s must be a string or a number", path, k)
		}
		vals.source[name] = "file " + path
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// settingError names the setting by flag and variable.
func settingError(name, format string, args ...any) error {
	s := lookupSetting(name)
	return fmt.Errorf("--%s (%s): %s", name, s.env, fmt.Sprintf(format, args...))
}

func (v *values) str(name string) string { return v.v[name] }

func (v *values) duration(name string) (time.Duration, error) {
	d, err := time.ParseDuration(v.v[name])
	if err != nil || d < 0 {
		return 0, settingError(name, "%q is not a duration such as 30s or 2m", v.v[name])
	}
	return d, nil
}

func (v *values) positiveInt(name string) (int, error) {
	n, err := strconv.Atoi(v.v[name])
	if err != nil || n <= 0 {
		return 0, settingError(name, "%q is not a positive whole number", v.v[name])
	}
	return n, nil
}

func (v *values) wholeInt(name string) (int64, error) {
	n, err := strconv.ParseInt(v.v[name], 10, 64)
	if err != nil {
		return 0, settingError(name, "%q is not a whole number", v.v[name])
	}
	return n, nil
}

func (v *values) hostPort(name string, optional bool) (string, error) {
	s := v.v[name]
	if s == "" && optional {
		return "", nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", settingError(name, "%q is not host:port (for example 127.0.0.1:8080)", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", settingError(name, "%q has a bad port", s)
	}
	_ = host
	return s, nil
}

func (v *values) oneOf(name string, options ...string) (string, error) {
	s := strings.ToLower(v.v[name])
	if !slices.Contains(options, s) {
		return "", settingError(name, "%q is not one of %s", v.v[name], strings.Join(options, ", "))
	}
	return s, nil
}

// print writes the effective configuration as TOML, secrets redacted, sources in comments.
func (v *values) print(w io.Writer) {
	fmt.Fprintln(w, "# Effective configuration; secrets are redacted. Usable as a --config file.")
	for _, s := range settings {
		if s.name == "config" {
			continue
		}
		val := v.v[s.name]
		if s.redact != nil {
			val = s.redact(val)
		}
		fmt.Fprintf(w, "%-20s = %-32s # %s\n", s.name, strconv.Quote(val), v.source[s.name])
	}
}
