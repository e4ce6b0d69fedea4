package embed

import (
	"encoding/json"
)

// newOllama returns a client of Ollama's embedding API: POST {url}/api/embed with
// {"model", "input": [texts]}, answered by {"embeddings": [[floats], ...]} in input order.
func newOllama(cfg Config) *remote {
	r := newRemote(cfg, "ollama", "/api/embed")
	r.request = func(batch []string) any {
		return struct {
			Model string   `json:"model"`
			Input []string `json:"input"`
		}{cfg.Model, batch}
	}
	r.decode = func(body []byte, _ int) ([][]float32, error) {
		var a struct {
			Embeddings [][]float32 `json:"embeddings"`
		}
		if err := json.Unmarshal(body, &a); err != nil {
			return nil, err
		}
		return a.Embeddings, nil
	}
	return r
}
