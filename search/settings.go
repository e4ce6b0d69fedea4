package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Settings say how a collection is searched.
type Settings struct {
	// Text makes the collection full-text searchable.
	Text *TextSettings `json:"text,omitempty"`
	// Vectors are the collection's vector fields.
	Vectors []VectorField `json:"vectors,omitempty"`
	// Partition, a path, partitions the collection by the documents' value there: a
	// search may be limited to some partitions, and each vector field gets an index per
	// partition.
	Partition string `json:"partition,omitempty" example:"region"`
}

// TextSettings configure full-text search.
type TextSettings struct {
	// Fields are the paths searched, each with a weight (A highest, D lowest; default B).
	Fields []TextField `json:"fields" minItems:"1" maxItems:"32"`
	// Language is the text-search configuration that stems and drops stop words:
	// english (default), simple (no stemming), german, french, … (PostgreSQL's).
	Language string `json:"language,omitempty" example:"english"`
	// Facets are paths whose values searches may count.
	Facets []string `json:"facets,omitempty" maxItems:"16"`
	// Typos, default true, lets a word of 5+ letters match with one typo, 9+ with two.
	Typos *bool `json:"typos,omitempty"`
}

// TextField is a searched path and its weight.
type TextField struct {
	Path   string `json:"path" example:"title"`
	Weight string `json:"weight,omitempty" enum:"A,B,C,D" example:"A"`
}

// VectorField is a named vector per document: given by the client at a path of the
// document, or computed from text fields by an embedder.
type VectorField struct {
	Name      string `json:"name" example:"embedding"`
	Dimension int    `json:"dimension" minimum:"1" maximum:"4096"`
	// Metric is cosine (default), l2 or ip (inner product; larger is closer).
	Metric string `json:"metric,omitempty" enum:"cosine,l2,ip"`
	// Path holds the vector in each document (an array of numbers); documents without one
	// are not indexed.
	Path string `json:"path,omitempty"`
	// Embed computes the vector from text fields instead.
	Embed *EmbedSource `json:"embed,omitempty"`
}

// EmbedSource computes a vector field from text.
type EmbedSource struct {
	// Fields are the paths whose text is embedded, joined.
	Fields []string `json:"fields" minItems:"1"`
	// Embedder is the model; the built-in one by default.
	Embedder EmbedderConfig `json:"embedder,omitzero"`
}

// EmbedderConfig names an embedder. Secrets are never stored: an API key is read from the
// environment variable named by APIKeyEnv on each node.
type EmbedderConfig struct {
	// Kind is builtin (default), ollama or openai (an OpenAI-compatible server).
	Kind      string `json:"kind,omitempty" enum:"builtin,ollama,openai"`
	URL       string `json:"url,omitempty"`
	Model     string `json:"model,omitempty"`
	APIKeyEnv string `json:"api_key_env,omitempty" doc:"Environment variable holding the API key (openai)."`
}

const maxVectorFields = 8

var (
	vectorNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)
	languageRE   = regexp.MustCompile(`^[a-z_]{1,63}$`)
)

// settings is a collection's settings as the store uses them.
type settings struct {
	Settings
	collID     string
	tenant     string
	collection string
	generation int64
	lang       string // validated regconfig name
	textSQL    string // the tsvector expression over documents d, or ""
	typos      bool
	partition  *filter.Path
	paths      map[string]filter.Path // vector field → its path (client-given vectors)
}

func (st *settings) vector(name string) *VectorField {
	for i := range st.Vectors {
		if st.Vectors[i].Name == name {
			return &st.Vectors[i]
		}
	}
	return nil
}

// check validates settings, canonicalizes them, and compiles their SQL.
func (s *Store) check(ctx context.Context, in Settings) (*settings, error) {
	st := &settings{Settings: in, paths: map[string]filter.Path{}}
	bad := func(field, format string, args ...any) error {
		return problem.Unprocessable("invalid_settings", format, args...).WithField("body."+field, "invalid")
	}
	if in.Text == nil && len(in.Vectors) == 0 {
		return nil, bad("text", "give text settings, vector fields, or both")
	}
	if in.Partition != "" {
		p, err := dataPath(in.Partition)
		if err != nil {
			return nil, bad("partition", "partition: %v", err)
		}
		st.partition = &p
	}
	if t := in.Text; t != nil {
		st.lang = strings.ToLower(t.Language)
		if st.lang == "" {
			st.lang = "english"
		}
		var ok bool
		if !languageRE.MatchString(st.lang) {
			return nil, bad("text.language", "%q is not a text-search configuration", t.Language)
		}
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_ts_config WHERE cfgname = $1)`, st.lang).Scan(&ok); err != nil {
			return nil, db.Translate(err, "language")
		}
		if !ok {
			return nil, bad("text.language", "%q is not a text-search configuration of this PostgreSQL (try english, simple, german, french…)", t.Language)
		}
		t.Language = st.lang
		if len(t.Fields) == 0 || len(t.Fields) > 32 {
			return nil, bad("text.fields", "give 1 to 32 text fields")
		}
		var parts []string
		for i := range t.Fields {
			f := &t.Fields[i]
			p, err := dataPath(f.Path)
			if err != nil {
				return nil, bad(fmt.Sprintf("text.fields[%d].path", i), "%v", err)
			}
			f.Path = p.String()
			if f.Weight == "" {
				f.Weight = "B"
			}
			if !slices.Contains([]string{"A", "B", "C", "D"}, f.Weight) {
				return nil, bad(fmt.Sprintf("text.fields[%d].weight", i), "weight is A, B, C or D")
			}
			parts = append(parts, fmt.Sprintf(`setweight(jsonb_to_tsvector('%s'::regconfig, coalesce(%s, 'null'::jsonb), '["string"]'), '%s')`,
				st.lang, filter.PathSQL("d.body", p), f.Weight))
		}
		st.textSQL = strings.Join(parts, " || ")
		for i, f := range t.Facets {
			p, err := dataPath(f)
			if err != nil {
				return nil, bad(fmt.Sprintf("text.facets[%d]", i), "%v", err)
			}
			t.Facets[i] = p.String()
		}
		st.typos = t.Typos == nil || *t.Typos
	}
	if len(in.Vectors) > maxVectorFields {
		return nil, bad("vectors", "at most %d vector fields", maxVectorFields)
	}
	seen := map[string]bool{}
	for i := range st.Vectors {
		v := &st.Vectors[i]
		field := fmt.Sprintf("vectors[%d]", i)
		if !vectorNameRE.MatchString(v.Name) || seen[v.Name] {
			return nil, bad(field+".name", "vector field names are unique, 1 to 64 letters, digits or _, starting with a letter")
		}
		seen[v.Name] = true
		if v.Dimension < 1 || v.Dimension > 4096 {
			return nil, bad(field+".dimension", "dimension is 1 to 4096")
		}
		if v.Metric == "" {
			v.Metric = "cosine"
		}
		if !slices.Contains([]string{"cosine", "l2", "ip"}, v.Metric) {
			return nil, bad(field+".metric", "metric is cosine, l2 or ip")
		}
		switch {
		case (v.Path == "") == (v.Embed == nil):
			return nil, bad(field, "give a vector field either a path (client-given vectors) or embed (computed from text)")
		case v.Path != "":
			p, err := dataPath(v.Path)
			if err != nil {
				return nil, bad(field+".path", "%v", err)
			}
			v.Path = p.String()
			st.paths[v.Name] = p
		default:
			if len(v.Embed.Fields) == 0 {
				return nil, bad(field+".embed.fields", "give the text fields to embed")
			}
			for j, f := range v.Embed.Fields {
				p, err := dataPath(f)
				if err != nil {
					return nil, bad(fmt.Sprintf("%s.embed.fields[%d]", field, j), "%v", err)
				}
				v.Embed.Fields[j] = p.String()
			}
			if err := s.checkEmbedder(v); err != nil {
				return nil, err
			}
		}
	}
	return st, nil
}

// dataPath parses a path into documents' data (not metadata, not the root).
func dataPath(src string) (filter.Path, error) {
	p, err := filter.ParsePath(src)
	if err != nil {
		return p, err
	}
	if p.Meta != "" || len(p.Elems) == 0 {
		return p, errors.New("a path into the documents, such as title or author.name")
	}
	return p, nil
}

// checkEmbedder checks that the embedder is known and configured, and that it makes
// vectors of the field's dimension.
func (s *Store) checkEmbedder(v *VectorField) error {
	e, err := s.embedder(v)
	if err != nil {
		return err
	}
	if e.Dim() != v.Dimension {
		return problem.Unprocessable("invalid_settings", "the embedder %s makes %d-dimensional vectors, not %d", e.Name(), e.Dim(), v.Dimension).
			WithField("body.vectors", "dimension")
	}
	return nil
}

// apiKey reads an embedder's API key from the environment.
func apiKey(c EmbedderConfig) string {
	if c.APIKeyEnv == "" {
		return ""
	}
	return os.Getenv(c.APIKeyEnv)
}

// SettingsGet returns a collection's search settings (read on the collection).
func (s *Store) SettingsGet(ctx context.Context, tenant, coll string) (Settings, error) {
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return Settings{}, err
	}
	st, err := s.settingsOf(ctx, collID)
	if err != nil {
		return Settings{}, err
	}
	if st == nil {
		return Settings{}, problem.NotFound("search_not_configured", "collection %q has no search settings", coll)
	}
	return st.Settings, nil
}

// SettingsPut sets a collection's search settings (admin on the collection). The indexes
// of the new settings are built in the background by queue jobs; their state is in
// Indexes. Documents written from now on are indexed as they are written.
func (s *Store) SettingsPut(ctx context.Context, tenant, coll string, in Settings) (Settings, error) {
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermAdmin)
	if err != nil {
		return Settings{}, err
	}
	st, err := s.check(ctx, in)
	if err != nil {
		return Settings{}, err
	}
	raw, err := json.Marshal(st.Settings)
	if err != nil {
		return Settings{}, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var gen int64
		if err := tx.QueryRow(ctx, `INSERT INTO search_settings (collection_id, tenant_id, settings) VALUES ($1, $2, $3)
			ON CONFLICT (collection_id) DO UPDATE SET settings = EXCLUDED.settings, generation = search_settings.generation + 1, updated_at = now()
			RETURNING generation`, collID, tenant, raw).Scan(&gen); err != nil {
			return err
		}
		if err := s.startBuilds(ctx, tx, tenant, collID, gen, st); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", settingsChannel, collID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "search.settings", ResourceType: "collection", ResourceID: coll})
	})
	if err != nil {
		return Settings{}, db.Translate(err, "search settings")
	}
	s.forget(collID)
	return st.Settings, nil
}

// SettingsDelete removes a collection's search settings and indexes (admin).
func (s *Store) SettingsDelete(ctx context.Context, tenant, coll string) error {
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermAdmin)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM search_settings WHERE collection_id = $1`, collID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return problem.NotFound("search_not_configured", "collection %q has no search settings", coll)
		}
		if err := dropRows(ctx, tx, collID, nil); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", settingsChannel, collID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "search.settings.delete", ResourceType: "collection", ResourceID: coll})
	})
	if err != nil {
		return db.Translate(err, "search settings")
	}
	s.forget(collID)
	s.dropIndexes(collID)
	return nil
}

// dropRows deletes a collection's derived rows: of some documents, or all (ids nil).
func dropRows(ctx context.Context, q doc.Execer, collID string, ids []string) error {
	if ids == nil {
		for _, table := range []string{"search_text", "search_words", "search_vectors", "search_indexes", "search_queries"} {
			if _, err := q.Exec(ctx, `DELETE FROM `+table+` WHERE collection_id = $1`, collID); err != nil {
				return err
			}
		}
		return nil
	}
	for _, table := range []string{"search_text", "search_vectors"} {
		if _, err := q.Exec(ctx, `DELETE FROM `+table+` WHERE collection_id = $1 AND doc_id = ANY($2)`, collID, ids); err != nil {
			return err
		}
	}
	return nil
}
