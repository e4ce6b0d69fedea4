package embed

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stratadb/strata/search/embed/internal/tfjs"
	"github.com/stratadb/strata/search/embed/internal/weights"
)

// EnvRequireNode makes the parity test fail, rather than skip, when node is missing. CI
// sets it.
const EnvRequireNode = "STRATA_REQUIRE_NODE"

// fixture is the reference runtime's directory: package.json and its lockfile pin
// @energetic-ai/embeddings, @energetic-ai/core (TensorFlow.js) and the model package.
var fixture = filepath.Join("testdata", "js")

// paritySentences exercise the tokenizer's corners: accents, compatibility forms that NFKC
// rewrites, CJK and emoji (unknown to the vocabulary), spaces, control characters, pieces
// with odd scores (":30"), an empty text (not last: the reference drops trailing empty
// texts from a batch) and a text longer than the model's 128 tokens.
var paritySentences = []string{
	"Hello world",
	"The quick brown fox jumps over the lazy dog.",
	"car",
	"How do I fix my car?",
	"Automobile repair shop near me",
	"Café crème brûlée à la carte, s'il vous plaît.",
	"Ünïcödé façade: naïve coöperation in Zürich",
	"東京は日本の首都です。北京是中国的首都。",
	"I love pizza 🍕 and fast cars 🚗💨!",
	"",
	"   leading, trailing   and  double  spaces   ",
	"ﬁne ｆｕｌｌｗｉｄｔｈ ① ™ ½ Ⅻ",
	"Meet me at 10:30 :) or 11:00 :-(",
	"tabs\tand\nnewlines\r\nbetween words",
	"UPPER lower MiXeD CaSe",
	"Привет, мир! مرحبا بالعالم",
	"http://example.com/path?query=1&x=y#frag user@example.org",
	strings.Repeat("Semantic search finds documents by meaning rather than by exact words, so a query about automobiles also matches vehicles. ", 8),
}

// reference is the reference runtime's answer for paritySentences.
type reference struct {
	TFJS    string      `json:"tfjs"`
	Backend string      `json:"backend"`
	Tokens  [][]int     `json:"tokens"`
	Vectors [][]float32 `json:"vectors"`
}

var (
	referenceOnce sync.Once
	referenceOut  *reference
	referenceErr  error
)

// runReference runs testdata/js/reference.js under node once per test binary.
func runReference(t *testing.T) *reference {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv(EnvRequireNode) == "" {
			t.Skipf("node is not installed, so the parity test against the reference JavaScript runtime cannot run "+
				"(install nodejs and npm, run `npm ci` in search/embed/%s; %s=1 makes this a failure)", filepath.ToSlash(fixture), EnvRequireNode)
		}
		t.Fatalf("%s is set but node is not installed: %v", EnvRequireNode, err)
	}
	if _, err := os.Stat(filepath.Join(fixture, "node_modules", "@energetic-ai", "embeddings")); err != nil {
		t.Fatalf("the reference runtime is not installed: run `npm ci` in search/embed/%s (%v)", filepath.ToSlash(fixture), err)
	}
	referenceOnce.Do(func() {
		in, _ := json.Marshal(paritySentences)
		cmd := exec.Command(node, "reference.js")
		cmd.Dir = fixture
		cmd.Stdin = bytes.NewReader(in)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			referenceErr = err
			if stderr.Len() > 0 {
				referenceErr = &exec.ExitError{Stderr: stderr.Bytes()}
				t.Logf("reference.js: %s", stderr.String())
			}
			return
		}
		referenceOut = &reference{}
		referenceErr = json.Unmarshal(out, referenceOut)
	})
	if referenceErr != nil {
		t.Fatalf("running the reference runtime: %v", referenceErr)
	}
	if len(referenceOut.Tokens) != len(paritySentences) || len(referenceOut.Vectors) != len(paritySentences) {
		t.Fatalf("the reference answered %d token lists and %d vectors for %d sentences",
			len(referenceOut.Tokens), len(referenceOut.Vectors), len(paritySentences))
	}
	return referenceOut
}

// float32Model converts the reference's own copy of the model with float32 matrices, so
// the port can be compared with the reference without the fp16 rounding.
func float32Model(t *testing.T) *builtin {
	t.Helper()
	dist := filepath.Join(fixture, "node_modules", "@energetic-ai", "model-embeddings-en", "dist")
	m, err := tfjs.Load(os.DirFS(dist), weights.F32)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := weights.Write(&buf, m.Meta, m.Tensors); err != nil {
		t.Fatal(err)
	}
	b, err := newBuiltin(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParityTokens checks that the tokenizer gives the reference's ids, exactly.
func TestParityTokens(t *testing.T) {
	t.Parallel()
	ref := runReference(t)
	b := mustBuiltin(t)
	long := false
	for i, s := range paritySentences {
		got := b.(*builtin).tok.encode(s)
		if !slices.Equal(got, ref.Tokens[i]) {
			t.Errorf("sentence %d %q:\n got  %v\n want %v", i, s, got, ref.Tokens[i])
		}
		long = long || len(got) > 128
	}
	if !long {
		t.Error("no parity sentence is longer than 128 tokens")
	}
}

// TestParityVectors compares vectors with the reference runtime (TensorFlow.js, float32):
// the port with float32 weights must match to 1e-5 per element, and the shipped fp16
// model must keep a cosine of at least 0.99999 with both.
func TestParityVectors(t *testing.T) {
	t.Parallel()
	ref := runReference(t)
	ctx := context.Background()
	exact, err := float32Model(t).Embed(ctx, paritySentences)
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := mustBuiltin(t).Embed(ctx, paritySentences)
	if err != nil {
		t.Fatal(err)
	}
	var worstDiff, worstDiff16 float64
	worstCos, worstCos16 := 1.0, 1.0
	for i, want := range ref.Vectors {
		if len(want) != builtinDim {
			t.Fatalf("reference vector %d has %d dimensions", i, len(want))
		}
		d, c := maxAbsDiff(exact[i], want), cosine(exact[i], want)
		if d > 1e-5 || c < 0.99999 {
			t.Errorf("sentence %d %q (float32 weights): max abs diff %.3g, cosine %.9f", i, paritySentences[i], d, c)
		}
		d16, c16 := maxAbsDiff(shipped[i], want), cosine(shipped[i], want)
		if c16 < 0.99999 || cosine(shipped[i], exact[i]) < 0.99999 {
			t.Errorf("sentence %d %q (fp16 weights): cosine %.9f to the reference, %.9f to float32", i, paritySentences[i], c16, cosine(shipped[i], exact[i]))
		}
		worstDiff, worstCos = max(worstDiff, d), min(worstCos, c)
		worstDiff16, worstCos16 = max(worstDiff16, d16), min(worstCos16, c16)
	}
	t.Logf("reference: tfjs %s on %s; %d sentences", ref.TFJS, ref.Backend, len(ref.Vectors))
	t.Logf("float32 weights: max abs diff %.3g, min cosine %.9f", worstDiff, worstCos)
	t.Logf("fp16 weights (shipped): max abs diff %.3g, min cosine %.9f", worstDiff16, worstCos16)
}

func maxAbsDiff(a, b []float32) float64 {
	var m float64
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

func cosine(a, b []float32) float64 {
	var dot, na, nb float64
	for i := range a {
		dot += float64(a[i]) * float64(b[i])
		na += float64(a[i]) * float64(a[i])
		nb += float64(b[i]) * float64(b[i])
	}
	return dot / math.Sqrt(na*nb)
}
