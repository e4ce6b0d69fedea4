package embed

import (
	"fmt"
	"math"

	"github.com/stratadb/strata/search/embed/internal/gemm"
	"github.com/stratadb/strata/search/embed/internal/weights"
)

// The encoder's widths, fixed by the model's tensors.
const (
	embedWidth = 256  // embedding table and layer 0's attention
	modelWidth = 512  // everything after layer 0's residual projection, and the output
	ffnWidth   = 1536 // the feed-forward blocks' hidden layer
)

// encoder is the forward pass of the sentence encoder, as model.json computes it (verified
// node by node in internal/tfjs/graph.go). Its weights are read-only, so one encoder serves
// any number of goroutines.
type encoder struct {
	meta       weights.Meta
	vocab      int       // rows of the embedding table
	embeddings []float32 // [vocab × embedWidth]
	timing     []float32 // [embedWidth/2] inverse timescales of the sinusoidal position signal
	layers     [2]layer
	project    dense // modelWidth → modelWidth, then tanh
}

// layer is one pre-norm transformer layer. Layer 0 reads embedWidth-wide rows and projects
// its residual to modelWidth; layer 1 is modelWidth wide throughout.
type layer struct {
	width    int // input width
	heads    int
	scale    float32 // applied to the queries
	ln1      layerNorm
	qkv      dense // width → 3·width: queries, keys, values
	out      dense // width → modelWidth
	residual dense // width → modelWidth; unused (nil) when width == modelWidth
	ln2      layerNorm
	ffn1     dense // modelWidth → ffnWidth, then ReLU
	ffn2     dense // ffnWidth → modelWidth
}

// layerNorm is a layer normalization's scale, bias and variance epsilon.
type layerNorm struct {
	scale, bias []float32
	eps         float32
}

// dense is x·W + b, W being [in × out] packed for gemm.
type dense struct {
	in, out int
	w       *gemm.Panels
	b       []float32
}

func newEncoder(f *weights.File) (*encoder, error) {
	e := &encoder{}
	if err := f.Meta(&e.meta); err != nil {
		return nil, err
	}
	m := &e.meta
	if len(m.Layers) != 2 || m.Dim != modelWidth || m.MaxTokens <= 0 || len(m.Pieces) != len(m.Scores) || len(m.Pieces) == 0 {
		return nil, fmt.Errorf("model metadata describes a different model: %d layers, %d dimensions, %d pieces", len(m.Layers), m.Dim, len(m.Pieces))
	}
	r := reader{f: f, eps: m.LayerNormEpsilon}
	e.vocab = len(m.Pieces) + 2 // the table has rows for two ids the vocabulary does not name
	e.embeddings = r.get("embeddings", e.vocab, embedWidth)
	e.timing = r.get("timing", embedWidth/2)
	for i, width := range []int{embedWidth, modelWidth} {
		p := fmt.Sprintf("l%d.", i)
		l := &e.layers[i]
		*l = layer{
			width: width, heads: m.Layers[i].Heads, scale: m.Layers[i].Scale,
			ln1:  r.norm(p+"ln1", width),
			qkv:  r.dense(p+"qkv", width, 3*width),
			out:  r.dense(p+"out", width, modelWidth),
			ln2:  r.norm(p+"ln2", modelWidth),
			ffn1: r.dense(p+"ffn1", modelWidth, ffnWidth),
			ffn2: r.dense(p+"ffn2", ffnWidth, modelWidth),
		}
		if width != modelWidth {
			l.residual = r.dense(p+"residual", width, modelWidth)
		}
		if l.heads <= 0 || width%l.heads != 0 {
			return nil, fmt.Errorf("layer %d: %d heads do not divide width %d", i, l.heads, width)
		}
	}
	e.project = r.dense("pool", modelWidth, modelWidth)
	return e, r.err
}

// reader loads tensors, keeping the first error.
type reader struct {
	f   *weights.File
	eps float32 // layer normalization's
	err error
}

func (r *reader) get(name string, shape ...int) []float32 {
	if r.err != nil {
		return nil
	}
	var v []float32
	v, r.err = r.f.Float32(name, shape...)
	return v
}

func (r *reader) norm(name string, width int) layerNorm {
	return layerNorm{scale: r.get(name+".scale", width), bias: r.get(name+".bias", width), eps: r.eps}
}

func (r *reader) dense(name string, in, out int) dense {
	w := r.get(name+".w", in, out)
	p := &gemm.Panels{}
	if w != nil {
		p.Pack(in, out, w, out)
	}
	return dense{in: in, out: out, w: p, b: r.get(name+".b", out)}
}

// batch is the work of one forward pass: the tokens of several sentences stacked into one
// matrix, so that every dense layer is one matrix product for all of them. Only attention
// and pooling look at sentence boundaries.
type batch struct {
	lens []int // tokens per sentence, in order
	rows int   // sum of lens
	// Scratch matrices, [rows × width] row-major, reused across layers.
	x, h, qkv, att, y, f []float32
}

// forward embeds sentences given as token ids (each already cut to MaxTokens) into out,
// one modelWidth vector per sentence.
func (e *encoder) forward(sentences [][]int, out [][]float32) {
	b := &batch{lens: make([]int, len(sentences))}
	for i, s := range sentences {
		b.lens[i] = len(s)
		b.rows += len(s)
	}
	b.x = make([]float32, b.rows*embedWidth)
	b.h = make([]float32, b.rows*modelWidth)
	b.qkv = make([]float32, b.rows*3*modelWidth)
	b.att = make([]float32, b.rows*modelWidth)
	b.y = make([]float32, b.rows*modelWidth)
	b.f = make([]float32, b.rows*ffnWidth)

	x := b.x
	if b.rows > 0 {
		e.embed(sentences, b.x)
		for i := range e.layers {
			x = e.layers[i].forward(b, x)
		}
	}
	e.pool(b, x, out)
}

// embed writes each token's input row: e + (e + timing(position)), where e is the token's
// row of the embedding table. The graph adds the embedding twice in exactly this order,
// once plainly and once with the timing signal.
func (e *encoder) embed(sentences [][]int, x []float32) {
	half := len(e.timing)
	row := 0
	for _, s := range sentences {
		for pos, id := range s {
			emb := e.embeddings[id*embedWidth : (id+1)*embedWidth]
			dst := x[row*embedWidth : (row+1)*embedWidth]
			for i, inv := range e.timing {
				angle := float64(float32(pos) * inv)
				dst[i] = emb[i] + (emb[i] + float32(math.Sin(angle)))
				dst[half+i] = emb[half+i] + (emb[half+i] + float32(math.Cos(angle)))
			}
			row++
		}
	}
}

// forward runs the layer over x ([rows × width]) and returns its output ([rows ×
// modelWidth]), which lives in b.y.
func (l *layer) forward(b *batch, x []float32) []float32 {
	n := b.rows
	h := b.h[:n*l.width]
	l.ln1.apply(x, h, l.width)
	qkv := b.qkv[:n*3*l.width]
	l.qkv.apply(h, qkv, n)
	l.attention(b, qkv)
	// y = residual + attention·Wout + bout, the residual being x, projected in layer 0.
	y := b.y[:n*modelWidth]
	if l.residual.w != nil {
		l.residual.apply(x, y, n)
	} else if &x[0] != &y[0] {
		copy(y, x)
	}
	l.out.apply(b.att[:n*l.width], b.h, n)
	add(y, b.h[:n*modelWidth])
	// y += ffn2(relu(ffn1(ln2(y))))
	l.ln2.apply(y, b.h, modelWidth)
	f := b.f[:n*ffnWidth]
	l.ffn1.apply(b.h, f, n)
	for i, v := range f {
		f[i] = max(v, 0)
	}
	l.ffn2.apply(f, b.att, n)
	add(y, b.att[:n*modelWidth])
	return y
}

// attention computes each sentence's multi-head self-attention from qkv ([rows × 3·width]:
// queries, keys, values) into b.att ([rows × width]). The queries are scaled in place, as
// the graph scales them before the dot products.
func (l *layer) attention(b *batch, qkv []float32) {
	w, dh := l.width, l.width/l.heads
	for r := range b.rows {
		q := qkv[r*3*w : r*3*w+w]
		for i := range q {
			q[i] *= l.scale
		}
	}
	att := b.att[:b.rows*w]
	clear(att)
	var keys, values gemm.Panels
	var scores []float32
	row := 0
	for _, n := range b.lens {
		if n == 0 {
			continue
		}
		ld := gemm.Padded(n) // scores' row stride: MulAdd writes whole panels
		scores = append(scores[:0], make([]float32, n*ld)...)
		base := qkv[row*3*w:]
		for h := range l.heads {
			// scores = q·kᵀ for this head, then softmax over the keys.
			clear(scores)
			keys.PackTransposed(dh, n, base[w+h*dh:], 3*w)
			keys.MulAdd(n, base[h*dh:], 3*w, scores, ld)
			for i := range n {
				softmax(scores[i*ld : i*ld+n])
			}
			// out = scores·v, into this head's columns of the sentence's rows.
			values.Pack(n, dh, base[2*w+h*dh:], 3*w)
			values.MulAdd(n, scores, ld, att[row*w+h*dh:], w)
		}
		row += n
	}
}

// pool averages each sentence's rows of x, then applies the tanh projection and L2
// normalization. A sentence without tokens averages to zeros, as the graph's
// division by max(count, 1) makes it.
func (e *encoder) pool(b *batch, x []float32, out [][]float32) {
	mean := make([]float32, modelWidth)
	row := 0
	for i, n := range b.lens {
		clear(mean)
		for r := row; r < row+n; r++ {
			add(mean, x[r*modelWidth:(r+1)*modelWidth])
		}
		row += n
		count := float32(max(n, 1))
		for j := range mean {
			mean[j] /= count
		}
		v := out[i]
		e.project.apply(mean, v, 1)
		var sum float32
		for j, t := range v {
			v[j] = float32(math.Tanh(float64(t)))
			sum += v[j] * v[j]
		}
		inv := float32(1 / math.Sqrt(float64(max(sum, e.meta.NormEpsilon))))
		for j := range v {
			v[j] *= inv
		}
	}
}

// apply computes out = x·W + b for rows rows of x. The widths are multiples of
// gemm.Width, so rows are packed with no padding.
func (d dense) apply(x, out []float32, rows int) {
	for r := range rows {
		copy(out[r*d.out:(r+1)*d.out], d.b)
	}
	d.w.MulAdd(rows, x, d.in, out, d.out)
}

// apply normalizes each width-wide row of x into out: scale·(x − mean)/√(var + ε) + bias,
// the variance taken around the mean, as the graph computes it.
func (n layerNorm) apply(x, out []float32, width int) {
	for r := 0; r+width <= len(x) && r+width <= len(out); r += width {
		row, dst := x[r:r+width], out[r:r+width]
		var sum float64
		for _, v := range row {
			sum += float64(v)
		}
		mean := float32(sum / float64(width))
		var sq float64
		for _, v := range row {
			d := float64(v - mean)
			sq += d * d
		}
		rs := float32(1 / math.Sqrt(float64(float32(sq/float64(width))+n.eps)))
		for i, v := range row {
			dst[i] = n.scale[i]*rs*(v-mean) + n.bias[i]
		}
	}
}

// softmax replaces v with exp(v − max)/Σ exp(v − max).
func softmax(v []float32) {
	m := v[0]
	for _, x := range v {
		m = max(m, x)
	}
	var sum float32
	for i, x := range v {
		v[i] = float32(math.Exp(float64(x - m)))
		sum += v[i]
	}
	for i := range v {
		v[i] /= sum
	}
}

// add sets dst[i] += src[i].
func add(dst, src []float32) {
	for i := range dst {
		dst[i] += src[i]
	}
}
