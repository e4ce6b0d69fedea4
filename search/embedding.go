package search

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/search/embed"
)

// Embedder turns texts into vectors (see the search/embed package for the built-in model
// and the clients of external servers).
type Embedder interface {
	Embed(ctx context.Context, texts []string) ([][]float32, error)
	Dim() int
	Name() string
}

// embedder returns the embedder an embedded vector field names, shared by every field
// that names the same one.
func (s *Store) embedder(v *VectorField) (Embedder, error) {
	c := v.Embed.Embedder
	s.mu.Lock()
	defer s.mu.Unlock()
	key := fmt.Sprintf("%s|%s|%s|%s|%d", c.Kind, c.URL, c.Model, c.APIKeyEnv, v.Dimension)
	if e, ok := s.embedders[key]; ok {
		return e, nil
	}
	newEmbedder := s.cfg.Embedders
	if newEmbedder == nil {
		newEmbedder = Embedders
	}
	e, err := newEmbedder(c, v.Dimension)
	if err != nil {
		return nil, err
	}
	s.embedders[key] = e
	return e, nil
}

// Embedders is the default Config.Embedders: the search/embed package's embedders (the
// built-in sentence encoder, Ollama, OpenAI-compatible), with the API key read from the
// environment variable the configuration names.
func Embedders(c EmbedderConfig, dim int) (Embedder, error) {
	return embed.New(embed.Config{Kind: c.Kind, URL: c.URL, Model: c.Model, Dimensions: dim, APIKey: apiKey(c)})
}

// embedText is the text a document contributes to an embedded field: the strings at the
// field's paths, joined.
func embedText(src *EmbedSource, body []byte) string {
	var data any
	if json.Unmarshal(body, &data) != nil {
		return ""
	}
	var parts []string
	for _, f := range src.Fields {
		p, err := dataPath(f)
		if err != nil {
			continue
		}
		v, ok := lookup(data, p)
		if !ok {
			continue
		}
		collectStrings(v, &parts)
	}
	return strings.Join(parts, "\n")
}

func collectStrings(v any, out *[]string) {
	switch x := v.(type) {
	case string:
		if s := strings.TrimSpace(x); s != "" {
			*out = append(*out, s)
		}
	case []any:
		for _, e := range x {
			collectStrings(e, out)
		}
	case map[string]any:
		for _, e := range x {
			collectStrings(e, out)
		}
	}
}

// embedDocs computes an embedded field's vectors for documents and stores them (a newer
// version replaces an older; a document changed meanwhile keeps its newer vector), then
// records a feed entry so every node's index picks them up.
func (s *Store) embedDocs(ctx context.Context, st *settings, v *VectorField, ids []string) error {
	e, err := s.embedder(v)
	if err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, `SELECT id, version, body FROM documents WHERE collection_id = $1 AND id = ANY($2) AND body IS NOT NULL`,
		st.collID, ids)
	if err != nil {
		return err
	}
	type one struct {
		id, text, part string
		version        int64
	}
	var docs []one
	var absent []string
	var id string
	var version int64
	var body []byte
	if _, err := pgx.ForEachRow(rows, []any{&id, &version, &body}, func() error {
		text := embedText(v.Embed, body)
		if text == "" {
			absent = append(absent, id)
			return nil
		}
		var data any
		_ = json.Unmarshal(body, &data)
		docs = append(docs, one{id: id, text: text, part: partitionOf(st, data), version: version})
		return nil
	}); err != nil {
		return err
	}
	const batch = 64
	for start := 0; start < len(docs); start += batch {
		chunk := docs[start:min(start+batch, len(docs))]
		texts := make([]string, len(chunk))
		for i, d := range chunk {
			texts[i] = d.text
		}
		vecs, err := e.Embed(ctx, texts)
		if err != nil {
			return err
		}
		if len(vecs) != len(chunk) {
			return problem.Unavailable("embedder_failed", "the embedder %s returned %d vectors for %d texts", e.Name(), len(vecs), len(chunk))
		}
		cids, parts, encoded, versions := make([]string, len(chunk)), make([]string, len(chunk)), make([][]byte, len(chunk)), make([]int64, len(chunk))
		for i, d := range chunk {
			if len(vecs[i]) != v.Dimension {
				return problem.Unavailable("embedder_failed", "the embedder %s returned a %d-dimensional vector, not %d", e.Name(), len(vecs[i]), v.Dimension)
			}
			cids[i], parts[i], encoded[i], versions[i] = d.id, d.part, encodeVector(vecs[i]), d.version
		}
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// Only over a document still at the version embedded: a newer write is embedded by
			// its own job.
			if _, err := tx.Exec(ctx, `INSERT INTO search_vectors (collection_id, field, doc_id, version, part, vec)
				SELECT $1, $2, u.id, u.version, u.part, u.vec FROM unnest($3::text[], $4::bigint[], $5::text[], $6::bytea[]) AS u(id, version, part, vec)
				JOIN documents d ON d.collection_id = $1 AND d.id = u.id AND d.version = u.version
				ON CONFLICT (collection_id, field, doc_id) DO UPDATE SET version = EXCLUDED.version, part = EXCLUDED.part, vec = EXCLUDED.vec
				WHERE search_vectors.version <= EXCLUDED.version`, st.collID, v.Name, cids, versions, parts, encoded); err != nil {
				return err
			}
			return feed.AppendMany(ctx, tx, st.tenant, "search", st.collection, "vectors", cids, 0)
		})
		if err != nil {
			return err
		}
	}
	if len(absent) > 0 {
		if _, err := s.pool.Exec(ctx, `DELETE FROM search_vectors WHERE collection_id = $1 AND field = $2 AND doc_id = ANY($3)`,
			st.collID, v.Name, absent); err != nil {
			return err
		}
	}
	s.feed.Kick()
	return nil
}
