package embed

import (
	"encoding/json"
	"fmt"
	"strings"
)

// newOpenAI returns a client of OpenAI's embeddings API, which many servers also speak
// (vLLM, llama.cpp, LocalAI, LM Studio): POST {url}/v1/embeddings with {"model", "input":
// [texts], "dimensions"?}, answered by {"data": [{"index", "embedding": [floats]}, ...]}.
// The answer's items are placed by their index, whatever their order.
func newOpenAI(cfg Config) *remote {
	path := "/v1/embeddings"
	if strings.HasSuffix(strings.TrimRight(cfg.URL, "/"), "/v1") {
		path = "/embeddings" // the URL already names the API version
	}
	r := newRemote(cfg, "openai-compatible server", path)
	dims := 0
	if cfg.RequestDimensions {
		dims = cfg.Dimensions
	}
	r.request = func(batch []string) any {
		return struct {
			Model      string   `json:"model"`
			Input      []string `json:"input"`
			Dimensions int      `json:"dimensions,omitempty"`
		}{cfg.Model, batch, dims}
	}
	r.decode = func(body []byte, n int) ([][]float32, error) {
		var a struct {
			Data []struct {
				Index     *int      `json:"index"`
				Embedding []float32 `json:"embedding"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &a); err != nil {
			return nil, err
		}
		if len(a.Data) != n {
			return nil, fmt.Errorf("%d items for %d texts", len(a.Data), n)
		}
		out := make([][]float32, n)
		for _, d := range a.Data {
			if d.Index == nil || *d.Index < 0 || *d.Index >= n || out[*d.Index] != nil {
				return nil, fmt.Errorf("an item has a missing, out of range or repeated index")
			}
			if d.Embedding == nil {
				return nil, fmt.Errorf("item %d has no embedding", *d.Index)
			}
			out[*d.Index] = d.Embedding
		}
		return out, nil
	}
	return r
}
