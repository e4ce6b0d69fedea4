package tfjs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/stratadb/strata/search/embed/internal/weights"
)

// graph is model.json's node list and constants, indexed by abbreviated name (see short).
type graph struct {
	nodes  map[string]*gnode
	consts map[string]*constant
	errs   []error
}

type gnode struct {
	op     string
	inputs []string
	attrs  map[string]json.RawMessage
}

func newGraph(nodes []node, consts map[string]*constant) (*graph, error) {
	g := &graph{nodes: map[string]*gnode{}, consts: map[string]*constant{}}
	for _, n := range nodes {
		name := short(n.Name)
		if _, dup := g.nodes[name]; dup {
			return nil, fmt.Errorf("two nodes abbreviate to %q", name)
		}
		gn := &gnode{op: n.Op, attrs: n.Attr}
		for _, in := range n.Input {
			gn.inputs = append(gn.inputs, short(in))
		}
		g.nodes[name] = gn
	}
	for name, c := range consts {
		g.consts[short(name)] = c
	}
	return g, nil
}

// tensorMap names each tensor of the model file, its shape, and the graph constant it
// comes from. Convolutions with 1×1 kernels ([1, 1, in, out]) are plain matrix products.
var tensorMap = []struct {
	name   string
	shape  []int
	source string
}{
	{"embeddings", []int{8002, 256}, "module/Embeddings_en"},
	{"timing", []int{128}, "TS/Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1"},

	{"l0.ln1.scale", []int{256}, "ENC/Layer_0/layer_norm/layer_norm_scale"},
	{"l0.ln1.bias", []int{256}, "ENC/Layer_0/layer_norm/layer_norm_bias"},
	{"l0.qkv.w", []int{256, 768}, "W/Layer_0/MHA/qkv_transform_single/kernel/part_0"},
	{"l0.qkv.b", []int{768}, "ENC/Layer_0/MHA/qkv_transform_single/bias"},
	{"l0.out.w", []int{256, 512}, "W/Layer_0/MHA/output_transform_single/kernel/part_0"},
	{"l0.out.b", []int{512}, "ENC/Layer_0/MHA/output_transform_single/bias"},
	{"l0.residual.w", []int{256, 512}, "ENC/Layer_0/dense/kernel"},
	{"l0.residual.b", []int{512}, "ENC/Layer_0/dense/bias"},
	{"l0.ln2.scale", []int{512}, "ENC/Layer_0/FFN/layer_norm/layer_norm_scale"},
	{"l0.ln2.bias", []int{512}, "ENC/Layer_0/FFN/layer_norm/layer_norm_bias"},
	{"l0.ffn1.w", []int{512, 1536}, "TS/Layer_0/FFN/conv1/Tensordot/Reshape_1"},
	{"l0.ffn1.b", []int{1536}, "ENC/Layer_0/FFN/conv1/bias"},
	{"l0.ffn2.w", []int{1536, 512}, "TS/Layer_0/FFN/conv2/Tensordot/Reshape_1"},
	{"l0.ffn2.b", []int{512}, "ENC/Layer_0/FFN/conv2/bias"},

	{"l1.ln1.scale", []int{512}, "ENC/Layer_1/layer_norm/layer_norm_scale"},
	{"l1.ln1.bias", []int{512}, "ENC/Layer_1/layer_norm/layer_norm_bias"},
	{"l1.qkv.w", []int{512, 1536}, "W/Layer_1/MHA/qkv_transform_single/kernel/part_0"},
	{"l1.qkv.b", []int{1536}, "ENC/Layer_1/MHA/qkv_transform_single/bias"},
	{"l1.out.w", []int{512, 512}, "W/Layer_1/MHA/output_transform_single/kernel/part_0"},
	{"l1.out.b", []int{512}, "ENC/Layer_1/MHA/output_transform_single/bias"},
	{"l1.ln2.scale", []int{512}, "ENC/Layer_1/FFN/layer_norm/layer_norm_scale"},
	{"l1.ln2.bias", []int{512}, "ENC/Layer_1/FFN/layer_norm/layer_norm_bias"},
	{"l1.ffn1.w", []int{512, 1536}, "TS/Layer_1/FFN/conv1/Tensordot/Reshape_1"},
	{"l1.ffn1.b", []int{1536}, "ENC/Layer_1/FFN/conv1/bias"},
	{"l1.ffn2.w", []int{1536, 512}, "TS/Layer_1/FFN/conv2/Tensordot/Reshape_1"},
	{"l1.ffn2.b", []int{512}, "ENC/Layer_1/FFN/conv2/bias"},

	{"pool.w", []int{512, 512}, "W/hidden_layers/tanh_layer_0/weights"},
	{"pool.b", []int{512}, "W/hidden_layers/tanh_layer_0/bias"},
}

// Frequently used nodes.
const (
	tokenPositions = "TS/Layer_1/FFN/StoreMask/ToInt32" //nolint:gosec // a tensor's name, not a credential. [tokens, 2]: (sentence, position) of each real token
	lastAxis       = "TS/Layer_1/FFN/layer_norm/Mean/reduction_indices"
	one            = "TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/ExpandDims/dim" // the int 1, an axis and a floor
	epsilon        = "TS/Layer_1/FFN/layer_norm/Cast/x"
	paddingBias    = "TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/ExpandDims_1"
	headsPerm      = "TS/Layer_1/MHA/split_heads/transpose/perm"
)

// verify checks, node by node, that model.json computes what the forward pass in
// search/embed computes. Each expectation names a node, its op, and its leading inputs
// (trailing inputs such as shapes and axes are not always listed).
func (g *graph) verify() error {
	g.input()
	// Layer 0 reads 256-wide rows and widens its residual to 512 with a dense layer.
	g.layerNorm("TS/Layer_0/", "TS/Layer_0/add", "ENC/Layer_0/")
	g.expect("TS/Layer_0/AdjustResidualInput/Gather/GatherNd", "GatherNd", "TS/Layer_0/add", tokenPositions)
	g.expect("TS/Layer_0/AdjustResidualInput/dense/MatMul", "MatMul", "TS/Layer_0/AdjustResidualInput/Gather/GatherNd", "ENC/Layer_0/dense/kernel")
	g.noTranspose("TS/Layer_0/AdjustResidualInput/dense/MatMul")
	g.expect("TS/Layer_0/AdjustResidualInput/dense/BiasAdd", "BiasAdd", "TS/Layer_0/AdjustResidualInput/dense/MatMul", "ENC/Layer_0/dense/bias")
	g.expect("TS/Layer_0/AdjustResidualInput/Scatter/ScatterNd", "ScatterNd", tokenPositions, "TS/Layer_0/AdjustResidualInput/dense/BiasAdd")
	g.attention("0", "TS/Layer_0/AdjustResidualInput/Scatter/ScatterNd")
	g.ffn("0")
	// Layer 1 is 512 wide throughout.
	g.layerNorm("TS/Layer_1/", "TS/Layer_0/FFN/layer_postprocess/add", "ENC/Layer_1/")
	g.attention("1", "TS/Layer_0/FFN/layer_postprocess/add")
	g.ffn("1")
	g.pool()
	return errors.Join(g.errs...)
}

// input: the sparse (indices, values) input keeps positions below MaxTokens; each token's
// row of the embedding table is added twice, once plainly and once with the sinusoidal
// timing signal: x = e + (e + [sin(p·inv), cos(p·inv)]).
func (g *graph) input() {
	g.expect("KT/ClipToMaxLength/strided_slice", "StridedSlice", "indices", "CF/TS/Layer_1/FFN/conv1/Tensordot/ListDiff-folded-0", "TS/Layer_0/AddTimingSignal/strided_slice_2/stack_1")
	g.expectValue("CF/TS/Layer_1/FFN/conv1/Tensordot/ListDiff-folded-0", 0, 1) // begin [0, 1]
	g.expectValue("TS/Layer_0/AddTimingSignal/strided_slice_2/stack_1", 0, 2)  // end [0, 2]: the position column
	g.expect("KT/ClipToMaxLength/Less", "Less", "KT/ClipToMaxLength/strided_slice", "KT/ClipToMaxLength/Less/y")
	g.expect("KT/ClipToMaxLength/Where", "Where", "KT/ClipToMaxLength/Less")
	g.expect("KT/ClipToMaxLength/Reshape", "Reshape", "KT/ClipToMaxLength/Where")
	g.expect("KT/ClipToMaxLength/GatherV2_1", "GatherV2", "values", "KT/ClipToMaxLength/Reshape")
	g.expect("ENC/SparseToDense", "SparseToDense", "KT/ClipToMaxLength/GatherV2", "KT/ClipToMaxLength/Maximum", "KT/ClipToMaxLength/GatherV2_1", "ENC/SparseToDense/default_value")
	g.expectValue("ENC/SparseToDense/default_value", -1)
	g.expect("ENC/Greater", "Greater", "ENC/SparseToDense", "ENC/SparseToDense/default_value")
	g.expect("TS/Layer_1/FFN/StoreMask/Where", "Where", "ENC/Greater")
	g.expect(tokenPositions, "Cast", "TS/Layer_1/FFN/StoreMask/Where")
	g.expect("ENC/embedding_lookup", "GatherV2", "module/Embeddings_en", "KT/ClipToMaxLength/GatherV2_1")
	g.expect("ENC/Scatter/ScatterNd", "ScatterNd", tokenPositions, "ENC/embedding_lookup")
	ts := "TS/Layer_0/AddTimingSignal/"
	g.expect(ts+"strided_slice_2", "StridedSlice", "TS/Layer_1/FFN/StoreMask/Where", "CF/TS/Layer_1/FFN/conv1/Tensordot/ListDiff-folded-0", "TS/Layer_0/AddTimingSignal/strided_slice_2/stack_1")
	g.expect(ts+"TimingSignal/ToFloat_2", "Cast", ts+"strided_slice_2")
	g.expect(ts+"TimingSignal/ExpandDims", "ExpandDims", ts+"TimingSignal/ToFloat_2", one)
	g.expect(ts+"TimingSignal/mul_2", "Mul", ts+"TimingSignal/ExpandDims", ts+"TimingSignal/ExpandDims_1")
	g.expect(ts+"TimingSignal/Sin", "Sin", ts+"TimingSignal/mul_2")
	g.expect(ts+"TimingSignal/Cos", "Cos", ts+"TimingSignal/mul_2")
	g.expect(ts+"TimingSignal/concat", "ConcatV2", ts+"TimingSignal/Sin", ts+"TimingSignal/Cos", one)
	g.expect(ts+"Gather/GatherNd", "GatherNd", "ENC/Scatter/ScatterNd", tokenPositions)
	g.expect(ts+"add", "Add", ts+"Gather/GatherNd", ts+"TimingSignal/concat")
	g.expect(ts+"Scatter/ScatterNd", "ScatterNd", tokenPositions, ts+"add")
	g.expect("TS/Layer_0/add", "Add", "ENC/Scatter/ScatterNd", ts+"Scatter/ScatterNd")
	// Attention ignores padded positions, of which a single sentence has none.
	g.expect("TS/Layer_1/MHA/DPA/LogicalNot", "LogicalNot", "ENC/Greater")
	g.expect("TS/Layer_1/MHA/DPA/ToFloat", "Cast", "TS/Layer_1/MHA/DPA/LogicalNot")
	g.expect("TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/mul", "Mul", "TS/Layer_1/MHA/DPA/ToFloat", "TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/mul/y")
	g.expect("TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/ExpandDims", "ExpandDims", "TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/mul")
	g.expect(paddingBias, "ExpandDims", "TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/ExpandDims")
	if v := g.scalar("TS/Layer_1/MHA/DPA/attention_bias_ignore_padding/mul/y"); v > -1e8 {
		g.fail("the padding bias is %g, not a large negative number", v)
	}
	g.expectValue(one, 1)
	g.expectValue(lastAxis, -1)
}

// layerNorm: out = scale · (x − mean) / √(var + ε) + bias over the last axis, with the
// variance taken around the mean (two passes).
func (g *graph) layerNorm(prefix, in, params string) {
	ln := prefix + "layer_norm/"
	g.expect(ln+"Mean", "Mean", in, lastAxis)
	g.expect(ln+"sub_1", "Sub", in, ln+"Mean")
	g.expect(ln+"Square", "Square", ln+"sub_1")
	g.expect(ln+"Mean_1", "Mean", ln+"Square", lastAxis)
	g.expect(ln+"add", "Add", ln+"Mean_1", epsilon)
	g.expect(ln+"Rsqrt", "Rsqrt", ln+"add")
	g.expect(ln+"mul", "Mul", params+"layer_norm/layer_norm_scale", ln+"Rsqrt")
	g.expect(ln+"mul_1", "Mul", ln+"mul", ln+"sub_1")
	g.expect(ln+"add_1", "Add", ln+"mul_1", params+"layer_norm/layer_norm_bias")
}

// attention: pre-norm multi-head self-attention; queries are scaled before the dot products,
// softmax over keys, heads concatenated and projected, and the residual added.
func (g *graph) attention(layer, residual string) {
	p, w, b := "TS/Layer_"+layer+"/MHA/", "W/Layer_"+layer+"/MHA/", "ENC/Layer_"+layer+"/MHA/"
	g.expect(p+"ExpandDims", "ExpandDims", "TS/Layer_"+layer+"/layer_norm/add_1")
	g.expect(p+"qkv_transform_single/Conv2D", "Conv2D", p+"ExpandDims", w+"qkv_transform_single/kernel/part_0")
	g.expect(p+"qkv_transform_single/BiasAdd", "BiasAdd", p+"qkv_transform_single/Conv2D", b+"qkv_transform_single/bias")
	g.expect(p+"Squeeze", "Squeeze", p+"qkv_transform_single/BiasAdd")
	g.expect(p+"split", "SplitV", p+"Squeeze", p+"Const") // [q | k | v]
	for i, out := range []string{"split", "split:1", "split:2"} {
		sh := p + "split_heads" + []string{"", "_1", "_2"}[i] + "/"
		g.expect(sh+"split_last_dimension/Reshape", "Reshape", p+out, sh+"split_last_dimension/Reshape/shape")
		g.expect(sh+"split_last_dimension/Reshape/shape", "Pack", sh+"split_last_dimension/strided_slice", sh+"split_last_dimension/strided_slice_1", "TS/Layer_1/MHA/split_heads/split_last_dimension/Reshape/shape/2", "TS/Layer_"+layer+"/MHA/split_heads/split_last_dimension/Reshape/shape/3")
		g.expect(sh+"transpose", "Transpose", sh+"split_last_dimension/Reshape", headsPerm)
	}
	g.expectValue(headsPerm, 0, 2, 1, 3)
	g.expect(p+"mul", "Mul", p+"split_heads/transpose", p+"mul/y")
	g.expect(p+"DPA/BaseDPA/MatMul", "BatchMatMul", p+"mul", p+"split_heads_1/transpose")
	g.attr(p+"DPA/BaseDPA/MatMul", "adj_x", `{"b":false}`)
	g.attr(p+"DPA/BaseDPA/MatMul", "adj_y", `{"b":true}`) // q · kᵀ
	g.expect(p+"DPA/BaseDPA/add", "Add", p+"DPA/BaseDPA/MatMul", paddingBias)
	g.expect(p+"DPA/BaseDPA/Reshape", "Reshape", p+"DPA/BaseDPA/add")
	g.expect(p+"DPA/BaseDPA/Softmax", "Softmax", p+"DPA/BaseDPA/Reshape")
	g.expect(p+"DPA/BaseDPA/attention_weights", "Reshape", p+"DPA/BaseDPA/Softmax")
	g.expect(p+"DPA/BaseDPA/MatMul_1", "BatchMatMul", p+"DPA/BaseDPA/attention_weights", p+"split_heads_2/transpose")
	g.attr(p+"DPA/BaseDPA/MatMul_1", "adj_x", `{"b":false}`)
	g.attr(p+"DPA/BaseDPA/MatMul_1", "adj_y", `{"b":false}`)
	g.expect(p+"combine_heads/transpose", "Transpose", p+"DPA/BaseDPA/MatMul_1", headsPerm)
	g.expect(p+"combine_heads/combine_last_two_dimensions/Reshape", "Reshape", p+"combine_heads/transpose")
	g.expect(p+"ExpandDims_1", "ExpandDims", p+"combine_heads/combine_last_two_dimensions/Reshape")
	g.expect(p+"output_transform_single/Conv2D", "Conv2D", p+"ExpandDims_1", w+"output_transform_single/kernel/part_0")
	g.expect(p+"output_transform_single/BiasAdd", "BiasAdd", p+"output_transform_single/Conv2D", b+"output_transform_single/bias")
	g.expect(p+"Squeeze_1", "Squeeze", p+"output_transform_single/BiasAdd")
	g.expect("TS/Layer_"+layer+"/layer_postprocess/add", "Add", p+"Squeeze_1", residual)
	for _, conv := range []string{"qkv_transform_single/Conv2D", "output_transform_single/Conv2D"} {
		g.strides(p + conv) // with a 1×1 kernel (checked by Load), a matrix product per row
	}
}

// ffn: pre-norm feed-forward block, relu(x·W1 + b1)·W2 + b2, plus the residual.
func (g *graph) ffn(layer string) {
	p, b := "TS/Layer_"+layer+"/FFN/", "ENC/Layer_"+layer+"/FFN/"
	g.layerNorm(p, "TS/Layer_"+layer+"/layer_postprocess/add", b)
	g.expect(p+"Gather/GatherNd", "GatherNd", p+"layer_norm/add_1", tokenPositions)
	g.expect(p+"ExpandDims", "ExpandDims", p+"Gather/GatherNd")
	g.expect(p+"conv1/Tensordot/Reshape", "Reshape", p+"ExpandDims")
	g.expect(p+"conv1/Tensordot/MatMul", "MatMul", p+"conv1/Tensordot/Reshape", p+"conv1/Tensordot/Reshape_1")
	g.noTranspose(p + "conv1/Tensordot/MatMul")
	g.expect(p+"conv1/Tensordot", "Reshape", p+"conv1/Tensordot/MatMul")
	g.expect(p+"conv1/BiasAdd", "BiasAdd", p+"conv1/Tensordot", b+"conv1/bias")
	g.expect(p+"conv1/Relu", "Relu", p+"conv1/BiasAdd")
	g.expect(p+"conv2/Tensordot/Reshape", "Reshape", p+"conv1/Relu")
	g.expect(p+"conv2/Tensordot/MatMul", "MatMul", p+"conv2/Tensordot/Reshape", p+"conv2/Tensordot/Reshape_1")
	g.noTranspose(p + "conv2/Tensordot/MatMul")
	g.expect(p+"conv2/Tensordot", "Reshape", p+"conv2/Tensordot/MatMul")
	g.expect(p+"conv2/BiasAdd", "BiasAdd", p+"conv2/Tensordot", b+"conv2/bias")
	g.expect(p+"Squeeze", "Squeeze", p+"conv2/BiasAdd")
	g.expect(p+"Scatter/ScatterNd", "ScatterNd", tokenPositions, p+"Squeeze")
	g.expect(p+"layer_postprocess/add", "Add", p+"Scatter/ScatterNd", "TS/Layer_"+layer+"/layer_postprocess/add")
}

// pool: mean over the sentence's tokens (divided by max(count, 1)), a dense layer with
// tanh, and L2 normalization with the squared length floored at NormEpsilon.
func (g *graph) pool() {
	g.expect("TS/MaskLength/ToInt32", "Cast", "ENC/Greater")
	g.expect("TS/MaskLength/Sum", "Sum", "TS/MaskLength/ToInt32", one)
	g.expect("KT/SequenceMask/ExpandDims", "ExpandDims", "TS/MaskLength/Sum")
	g.expect("KT/SequenceMask/Less", "Less", "KT/SequenceMask/Range", "KT/SequenceMask/ExpandDims")
	g.expect("KT/ToFloat", "Cast", "KT/SequenceMask/Less")
	g.expect("KT/ExpandDims", "ExpandDims", "KT/ToFloat")
	g.expect("KT/mul", "Mul", "TS/Layer_1/FFN/layer_postprocess/add", "KT/ExpandDims")
	g.expect("KT/Sum", "Sum", "KT/mul", one)
	g.expect("KT/Maximum", "Maximum", "TS/MaskLength/Sum", one)
	g.expect("KT/ToFloat_1", "Cast", "KT/Maximum")
	g.expect("KT/ExpandDims_1", "ExpandDims", "KT/ToFloat_1")
	g.expect("KT/div", "RealDiv", "KT/Sum", "KT/ExpandDims_1")
	h := "E/hidden_layers/"
	g.expect(h+"tanh_layer_0/MatMul", "MatMul", "KT/div", "W/hidden_layers/tanh_layer_0/weights")
	g.noTranspose(h + "tanh_layer_0/MatMul")
	g.expect(h+"tanh_layer_0/BiasAdd", "BiasAdd", h+"tanh_layer_0/MatMul", "W/hidden_layers/tanh_layer_0/bias")
	g.expect(h+"tanh_layer_0/Tanh", "Tanh", h+"tanh_layer_0/BiasAdd")
	g.expect(h+"l2_normalize/Square", "Square", h+"tanh_layer_0/Tanh")
	g.expect(h+"l2_normalize/Sum", "Sum", h+"l2_normalize/Square", one)
	g.expect(h+"l2_normalize/Maximum", "Maximum", h+"l2_normalize/Sum", h+"l2_normalize/Maximum/y")
	g.expect(h+"l2_normalize/Rsqrt", "Rsqrt", h+"l2_normalize/Maximum")
	g.expect(h+"l2_normalize", "Mul", h+"tanh_layer_0/Tanh", h+"l2_normalize/Rsqrt")
	// The normalized vector is the graph's only output.
	used := map[string]bool{}
	for _, n := range g.nodes {
		for _, in := range n.inputs {
			used[strings.SplitN(in, ":", 2)[0]] = true
		}
	}
	for name, n := range g.nodes {
		if !used[name] && n.op != "Const" && name != h+"l2_normalize" {
			g.fail("node %q (%s) is a second output", name, n.op)
		}
	}
}

// meta reads the hyperparameters the forward pass needs from the graph's constants.
func (g *graph) meta() (weights.Meta, error) {
	m := weights.Meta{
		Dim:              512,
		MaxTokens:        int(g.scalar("KT/ClipToMaxLength/Less/y")),
		LayerNormEpsilon: g.scalar(epsilon),
		NormEpsilon:      g.scalar("E/hidden_layers/l2_normalize/Maximum/y"),
	}
	heads := int(g.scalar("TS/Layer_1/MHA/split_heads/split_last_dimension/Reshape/shape/2"))
	for _, l := range []string{"0", "1"} {
		width := g.scalar("TS/Layer_" + l + "/MHA/split_heads/split_last_dimension/Reshape/shape/3")
		scale := g.scalar("TS/Layer_" + l + "/MHA/mul/y")
		if math.Abs(float64(scale)-1/math.Sqrt(float64(width))) > 1e-6 {
			g.fail("layer %s scales queries by %g, not 1/√%g", l, scale, width)
		}
		m.Layers = append(m.Layers, weights.LayerMeta{Heads: heads, Scale: scale})
	}
	g.expectValue("TS/Layer_0/MHA/Const", 256, 256, 256)
	g.expectValue("TS/Layer_1/MHA/Const", 512, 512, 512)
	if m.MaxTokens != 128 || heads != 4 || m.LayerNormEpsilon <= 0 || m.NormEpsilon <= 0 {
		g.fail("unexpected hyperparameters: max tokens %d, heads %d, epsilons %g and %g", m.MaxTokens, heads, m.LayerNormEpsilon, m.NormEpsilon)
	}
	return m, errors.Join(g.errs...)
}

// vocabRows is the number of rows of the embedding table.
func (g *graph) vocabRows() int {
	if c := g.consts["module/Embeddings_en"]; c != nil {
		return c.shape[0]
	}
	return 0
}

func (g *graph) fail(format string, args ...any) {
	g.errs = append(g.errs, fmt.Errorf(format, args...))
}

// expect checks that node is an op whose leading inputs are inputs.
func (g *graph) expect(node, op string, inputs ...string) {
	n := g.nodes[node]
	switch {
	case n == nil:
		g.fail("no node %q", node)
	case n.op != op:
		g.fail("node %q is %s, want %s", node, n.op, op)
	case len(n.inputs) < len(inputs):
		g.fail("node %q has inputs %v, want %v", node, n.inputs, inputs)
	default:
		for i, in := range inputs {
			if n.inputs[i] != in {
				g.fail("node %q input %d is %q, want %q", node, i, n.inputs[i], in)
			}
		}
	}
}

// attr checks one attribute of a node, compared as compact JSON.
func (g *graph) attr(node, key, want string) {
	n := g.nodes[node]
	if n == nil {
		return // expect reports it
	}
	var got bytes.Buffer
	if err := json.Compact(&got, n.attrs[key]); err != nil || got.String() != want {
		g.fail("node %q attribute %s is %s, want %s", node, key, n.attrs[key], want)
	}
}

// strides checks that a convolution moves one step at a time.
func (g *graph) strides(node string) {
	var a struct{ List struct{ I []string } }
	if n := g.nodes[node]; n != nil {
		if err := json.Unmarshal(n.attrs["strides"], &a); err != nil || strings.Join(a.List.I, ",") != "1,1,1,1" {
			g.fail("node %q has strides %s, want 1", node, n.attrs["strides"])
		}
	}
}

func (g *graph) noTranspose(node string) {
	g.attr(node, "transpose_a", `{"b":false}`)
	g.attr(node, "transpose_b", `{"b":false}`)
}

// expectValue checks a constant's values.
func (g *graph) expectValue(name string, want ...float32) {
	c := g.consts[name]
	if c == nil || len(c.data) != len(want) {
		g.fail("constant %q is %v, want %v", name, c, want)
		return
	}
	for i := range want {
		if c.data[i] != want[i] {
			g.fail("constant %q is %v, want %v", name, c.data, want)
			return
		}
	}
}

// scalar is a one-element constant's value, or NaN (and a failure) without one.
func (g *graph) scalar(name string) float32 {
	c := g.consts[name]
	if c == nil || len(c.data) != 1 {
		g.fail("no scalar constant %q", name)
		return float32(math.NaN())
	}
	return c.data[0]
}
