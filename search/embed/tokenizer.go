package embed

import (
	"strings"
	"unicode/utf16"

	"golang.org/x/text/unicode/norm"
)

// maxTextBytes bounds the text the tokenizer reads. Pieces never contain "▁" (a space) past
// their first character, so every space is a boundary of every segmentation and cutting a
// longer text at a space leaves the tokens before it unchanged; the model reads only the
// first 128 tokens, which lie far within 32 KiB.
const maxTextBytes = 32 << 10

// tokenizer is a port of the SentencePiece unigram tokenizer of @energetic-ai/embeddings
// 0.2.0 (lib/tokenizer.ts), including its quirks, so that token ids match exactly:
//   - input is NFKC-normalized, then "▁" is prefixed and every U+0020 becomes "▁";
//   - Viterbi over the pieces' scores treats a best score of exactly 0 as "none yet" and
//     prefers the later candidate on ties;
//   - a character no piece starts with is unknown (id 0, score 0), and runs of unknown
//     tokens collapse into one;
//   - when backtracking, a piece's length is counted in UTF-16 code units, as JavaScript's
//     String.length does (no piece of this vocabulary lies outside the BMP, so it equals the
//     count of characters).
type tokenizer struct {
	root   *trieNode
	scores []float64
	units  []int // each piece's length in UTF-16 code units
}

// trieNode is a node of the trie of pieces, one edge per character.
type trieNode struct {
	children map[rune]*trieNode
	id       int // the piece ending here, or -1
	length   int // characters from the root
}

// separator stands for a space, and starts words, in SentencePiece pieces.
const separator = '▁'

func newTokenizer(pieces []string, scores []float64, reserved int) *tokenizer {
	t := &tokenizer{root: &trieNode{id: -1}, scores: scores, units: make([]int, len(pieces))}
	for id, p := range pieces {
		t.units[id] = len(utf16.Encode([]rune(p)))
		if id < reserved {
			continue // <unk>, <s>, </s> and the extra ids never match text
		}
		n := t.root
		for _, r := range p {
			child := n.children[r]
			if child == nil {
				child = &trieNode{id: -1, length: n.length + 1}
				if n.children == nil {
					n.children = map[rune]*trieNode{}
				}
				n.children[r] = child
			}
			n = child
		}
		n.id = id // a duplicate piece keeps its last id, as the reference trie does
	}
	return t
}

// edge is a piece (or the unknown token) spanning characters [start, start+length).
type edge struct {
	start, length, id int
	score             float64
}

// encode returns text's token ids, all of them (the model reads the first MaxTokens).
func (t *tokenizer) encode(text string) []int {
	symbols := []rune(prepare(text))
	n := len(symbols)
	// ends[e] lists the edges ending at e, by increasing start: the order in which the
	// reference visits them, which decides ties.
	ends := make([][]edge, n+1)
	for i := range symbols {
		found := false
		for node := t.root.children[symbols[i]]; node != nil; {
			if node.id >= 0 {
				ends[i+node.length] = append(ends[i+node.length], edge{i, node.length, node.id, t.scores[node.id]})
				found = true
			}
			if i+node.length >= n {
				break
			}
			node = node.children[symbols[i+node.length]]
		}
		if !found {
			ends[i+1] = append(ends[i+1], edge{i, 1, 0, 0})
		}
	}
	best, words := make([]float64, n+1), make([]int, n+1)
	for e := 1; e <= n; e++ {
		for _, w := range ends[e] {
			score := w.score + best[w.start]
			if best[e] == 0 || score >= best[e] {
				best[e], words[e] = score, w.id
			}
		}
	}
	var ids []int
	for e := n; e > 0; e -= t.units[words[e]] {
		ids = append(ids, words[e])
	}
	// ids run backwards; drop every unknown that follows another, then reverse.
	out := ids[:0]
	for i, id := range ids {
		if id == 0 && i > 0 && ids[i-1] == 0 {
			continue
		}
		out = append(out, id)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// prepare bounds, normalizes and marks up text as the reference's processInput does.
func prepare(text string) string {
	if len(text) > maxTextBytes {
		cut := strings.LastIndexByte(text[:maxTextBytes], ' ')
		if cut < maxTextBytes/2 { // no space near the end: cut at a character boundary
			cut = maxTextBytes
			for cut > 0 && text[cut]&0xc0 == 0x80 {
				cut--
			}
		}
		text = text[:cut]
	}
	text = norm.NFKC.String(strings.ToValidUTF8(text, "\uFFFD"))
	if text == "" {
		return ""
	}
	return string(separator) + strings.ReplaceAll(text, " ", string(separator))
}
