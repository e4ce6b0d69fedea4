package graph

import (
	"cmp"
	"encoding/binary"
	"slices"
)

// mhop is one hop of a node's adjacency, as traversals other than the breadth-first one
// read it.
type mhop struct {
	eid  int64
	nbr  int32  // dense index of the node at the other end
	typ  uint16 // index into adjacency.types
	dead bool   // deleted since the lists were built
}

// csr is adjacency in compressed sparse rows: node u's hops are [off[u], off[u+1]) of the
// arrays, sorted as the SQL indexes are — by type id, then the other node's number, then
// edge id — so an in-memory traversal meets hops in the order the SQL walker's index scans
// would. The arrays are apart (15 bytes a hop in all) so that a breadth-first walk without
// paths, over every type, reads the neighbours only: 4 bytes a hop.
type csr struct {
	off   []uint32
	nbr   []int32  // dense index of the node at the other end
	typ   []uint16 // index into adjacency.types
	eid   []int64
	dead  []bool // deleted since the lists were built
	deadN int    // how many are
}

// span returns the range of u's hops.
func (c *csr) span(u int32) (lo, hi uint32) {
	if int(u)+1 >= len(c.off) {
		return 0, 0
	}
	return c.off[u], c.off[u+1]
}

func (c *csr) hop(k uint32) mhop {
	return mhop{eid: c.eid[k], nbr: c.nbr[k], typ: c.typ[k], dead: c.dead[k]}
}

// xedge is an edge added since the lists were built (the overlay).
type xedge struct {
	id       int64
	from, to int32
	typ      uint16
	dead     bool
}

// adjacency is a tenant's live edges, out and in, over dense node indexes: the lists built
// at load, and an overlay of the edges added since. Nodes are named without a query: each
// dense index has its node number, collection and document id.
type adjacency struct {
	num   []int64   // dense → node number
	nodes []nodeRec // dense → collection and document id
	docs  []byte    // document ids too long to be held in their nodeRec
	base  int       // nodes in the lists; nodes added later have dense indexes ≥ base

	// Node number → dense index: lut[n-lutMin]-1 when the tenant's node numbers are close
	// together, else a binary search of num[:base]; added holds the nodes added since.
	lutMin int64
	lut    []int32
	added  map[int64]int32
	// monotone: node numbers grow with dense indexes, so sorting dense indexes sorts by
	// node number (false once a node added later has a smaller number than another).
	monotone bool

	colls  []string // collection index → collection id
	collIx map[string]uint16
	types  []int32 // type index → type id
	typeIx map[int32]uint16

	out, in csr
	x       []xedge
	xout    map[int32][]int32 // dense → indexes into x, in index order (hopOrder)
	xin     map[int32][]int32
	xbyID   map[int64]int32

	live      int64 // live edges
	deadCount int   // edges of the lists marked dead, and dead overlay edges
}

// nodeRec names a node in 16 bytes: its collection's index and its document id, held in
// place when it is short (most are), else in adjacency.docs. One memory access names a
// node: results are named as fast as they are found.
type nodeRec struct {
	coll uint16
	len  uint16
	id   [12]byte // the id when len ≤ 12; else its offset in docs (4 bytes, little-endian)
}

func (g *adjacency) addNodeRec(coll uint16, id []byte) {
	r := nodeRec{coll: coll, len: uint16(min(len(id), 1<<16-1))}
	if len(id) <= len(r.id) {
		copy(r.id[:], id)
	} else {
		binary.LittleEndian.PutUint32(r.id[:], uint32(len(g.docs)))
		g.docs = append(g.docs, id[:r.len]...)
	}
	g.nodes = append(g.nodes, r)
}

// appendDocID appends the document id of a node to b.
func (g *adjacency) appendDocID(b []byte, d int32) []byte {
	r := &g.nodes[d]
	if int(r.len) <= len(r.id) {
		return append(b, r.id[:r.len]...)
	}
	off := binary.LittleEndian.Uint32(r.id[:])
	return append(b, g.docs[off:off+uint32(r.len)]...)
}

// dense returns the dense index of a node number.
func (g *adjacency) dense(n int64) (int32, bool) {
	if g.lut != nil {
		if i := n - g.lutMin; i >= 0 && i < int64(len(g.lut)) && g.lut[i] > 0 {
			return g.lut[i] - 1, true
		}
	} else if i, ok := slices.BinarySearch(g.num[:g.base], n); ok {
		return int32(i), true
	}
	d, ok := g.added[n]
	return d, ok
}

// docID returns the document id of a node.
func (g *adjacency) docID(d int32) string {
	r := &g.nodes[d]
	if int(r.len) <= len(r.id) {
		return string(r.id[:r.len])
	}
	off := binary.LittleEndian.Uint32(r.id[:])
	return string(g.docs[off : off+uint32(r.len)])
}

// collIndex returns the index of a collection id; ok is false when a tenant has more
// collections than an index can number (65,535), which load and sync refuse.
func (g *adjacency) collIndex(id string) (uint16, bool) { return intern(&g.colls, g.collIx, id) }

// typeIndex returns the index of a type id; ok is false when a tenant has more types than
// an index can number (65,535), which load and sync refuse.
func (g *adjacency) typeIndex(id int32) (uint16, bool) { return intern(&g.types, g.typeIx, id) }

// intern numbers k in list (with ix its reverse), adding it when it is new; ok is false
// once list holds as many as a uint16 numbers.
func intern[K comparable](list *[]K, ix map[K]uint16, k K) (uint16, bool) {
	if i, ok := ix[k]; ok {
		return i, true
	}
	if len(*list) >= 1<<16-1 {
		return 0, false
	}
	i := uint16(len(*list))
	*list = append(*list, k)
	ix[k] = i
	return i, true
}

// node returns the dense index of a node number, adding the node when it is new; ok is
// false when its collection cannot be numbered (collIndex).
func (g *adjacency) node(n int64, collID, docID string) (int32, bool) {
	if d, ok := g.dense(n); ok {
		return d, true
	}
	coll, ok := g.collIndex(collID)
	if !ok {
		return 0, false
	}
	d := int32(len(g.num))
	if d > 0 && g.num[d-1] > n {
		g.monotone = false
	}
	g.num = append(g.num, n)
	g.addNodeRec(coll, []byte(docID))
	g.added[n] = d
	return d, true
}

// has reports whether a live edge id from node number from is held.
func (g *adjacency) has(id, from int64) bool {
	if i, ok := g.xbyID[id]; ok {
		return !g.x[i].dead
	}
	f, ok := g.dense(from)
	if !ok {
		return false
	}
	lo, hi := g.out.span(f)
	for k := lo; k < hi; k++ {
		if g.out.eid[k] == id {
			return !g.out.dead[k]
		}
	}
	return false
}

// add adds a live edge to the overlay (the caller checked it is not held).
func (g *adjacency) add(id int64, from, to int32, typ uint16) {
	i := int32(len(g.x))
	g.x = append(g.x, xedge{id: id, from: from, to: to, typ: typ})
	g.xout[from] = g.insertX(g.xout[from], i, Out)
	g.xin[to] = g.insertX(g.xin[to], i, In)
	g.xbyID[id] = i
	g.live++
}

// remove marks an edge between node numbers from and to dead, if held live.
func (g *adjacency) remove(id, from, to int64) {
	if i, ok := g.xbyID[id]; ok {
		g.removeX(i)
		return
	}
	f, ok1 := g.dense(from)
	t, ok2 := g.dense(to)
	if !ok1 || !ok2 {
		return
	}
	if !g.out.kill(f, id) {
		return
	}
	g.in.kill(t, id)
	g.live--
	g.deadCount++
}

// kill marks u's live hop of edge id dead, if there is one.
func (c *csr) kill(u int32, id int64) bool {
	lo, hi := c.span(u)
	for k := lo; k < hi; k++ {
		if c.eid[k] == id && !c.dead[k] {
			c.dead[k] = true
			c.deadN++
			return true
		}
	}
	return false
}

func (g *adjacency) removeX(i int32) {
	if g.x[i].dead {
		return
	}
	g.x[i].dead = true
	g.live--
	g.deadCount++
}

// removeAll marks dead every edge of ids held live, wherever it is: for edges whose rows
// are gone (a deleted collection's), whose ends are not known any more.
func (g *adjacency) removeAll(ids map[int64]bool) {
	var lo, hi int64 = 1<<63 - 1, -1 << 63
	for id := range ids {
		if i, ok := g.xbyID[id]; ok {
			g.removeX(i)
			delete(ids, id)
			continue
		}
		lo, hi = min(lo, id), max(hi, id)
	}
	if len(ids) == 0 {
		return
	}
	for _, c := range []*csr{&g.out, &g.in} {
		for k, id := range c.eid {
			if id >= lo && id <= hi && !c.dead[k] && ids[id] {
				c.dead[k] = true
				c.deadN++
				if c == &g.out {
					g.live--
					g.deadCount++
				}
			}
		}
	}
}

// xhop is overlay edge i as a hop going dir.
func (g *adjacency) xhop(i int32, dir Direction) mhop {
	e := &g.x[i]
	nbr := e.to
	if dir == In {
		nbr = e.from
	}
	return mhop{eid: e.id, nbr: nbr, typ: e.typ, dead: e.dead}
}

// insertX inserts overlay edge i into a node's overlay list going dir, in index order.
func (g *adjacency) insertX(list []int32, i int32, dir Direction) []int32 {
	h := g.xhop(i, dir)
	at, _ := slices.BinarySearchFunc(list, h, func(j int32, h mhop) int { return g.hopOrder(g.xhop(j, dir), h) })
	return slices.Insert(list, at, i)
}

// hopsOf returns u's hops going dir (Out or In), in index order, the dead ones included
// (callers skip them), in buf: the lists' hops, merged with the overlay's (both sorted)
// when u has some.
func (g *adjacency) hopsOf(u int32, dir Direction, buf []mhop) []mhop {
	c, xs := &g.out, g.xout
	if dir == In {
		c, xs = &g.in, g.xin
	}
	buf = buf[:0]
	lo, hi := c.span(u)
	var extra []int32
	if len(g.x) > 0 {
		extra = xs[u]
	}
	k := lo
	for _, i := range extra {
		h := g.xhop(i, dir)
		for ; k < hi && g.hopOrder(c.hop(k), h) <= 0; k++ {
			buf = append(buf, c.hop(k))
		}
		buf = append(buf, h)
	}
	for ; k < hi; k++ {
		buf = append(buf, c.hop(k))
	}
	return buf
}

// overlaid reports whether u has overlay hops going dir.
func (g *adjacency) overlaid(u int32, dir Direction) bool {
	if len(g.x) == 0 {
		return false
	}
	if dir == In {
		return len(g.xin[u]) > 0
	}
	return len(g.xout[u]) > 0
}

// hopOrder is the order of the SQL adjacency indexes: type id, other node, edge id.
func (g *adjacency) hopOrder(a, b mhop) int {
	if a.typ != b.typ {
		return cmp.Compare(g.types[a.typ], g.types[b.typ])
	}
	if a.nbr != b.nbr {
		return cmp.Compare(g.num[a.nbr], g.num[b.nbr])
	}
	return cmp.Compare(a.eid, b.eid)
}

// sortNodes sorts dense indexes by node number.
func (g *adjacency) sortNodes(ds []int32) {
	if g.monotone {
		slices.Sort(ds)
		return
	}
	slices.SortFunc(ds, func(a, b int32) int { return cmp.Compare(g.num[a], g.num[b]) })
}

// bytes estimates the memory the adjacency holds.
func (g *adjacency) bytes() int64 {
	n := int64(cap(g.num))*8 + int64(cap(g.nodes))*16 + int64(cap(g.docs)) + int64(cap(g.lut))*4
	n += int64(cap(g.out.off)+cap(g.in.off))*4 + int64(cap(g.out.nbr)+cap(g.in.nbr))*15
	n += int64(cap(g.x))*24 + int64(len(g.xbyID)+len(g.added))*24 + int64(len(g.x))*2*12
	return n
}

// edgeList is a set of edges over dense node indexes, as read at load.
type edgeList struct {
	from, to []int32
	typ      []uint16
	id       []int64
}

// buildLists builds both directions' lists over n nodes; e may be reused after.
func (g *adjacency) buildLists(n int, e *edgeList) {
	g.out = buildCSR(n, e.from, e.to, e.typ, e.id, g.hopOrder)
	g.in = buildCSR(n, e.to, e.from, e.typ, e.id, g.hopOrder)
	g.live = int64(len(e.id))
}

func buildCSR(n int, key, other []int32, typ []uint16, id []int64, order func(a, b mhop) int) csr {
	off := make([]uint32, n+1)
	for _, k := range key {
		off[k+1]++
	}
	for i := 1; i <= n; i++ {
		off[i] += off[i-1]
	}
	pos := make([]uint32, n)
	copy(pos, off[:n])
	hops := make([]mhop, len(key))
	for i, k := range key {
		hops[pos[k]] = mhop{eid: id[i], nbr: other[i], typ: typ[i]}
		pos[k]++
	}
	for u := range n {
		if seg := hops[off[u]:off[u+1]]; len(seg) > 1 {
			slices.SortFunc(seg, order)
		}
	}
	c := csr{off: off, nbr: make([]int32, len(hops)), typ: make([]uint16, len(hops)), eid: make([]int64, len(hops)), dead: make([]bool, len(hops))}
	for k, h := range hops {
		c.nbr[k], c.typ[k], c.eid[k] = h.nbr, h.typ, h.eid
	}
	return c
}

// newAdjacency returns an empty adjacency.
func newAdjacency() *adjacency {
	return &adjacency{monotone: true, collIx: map[string]uint16{}, typeIx: map[int32]uint16{}, added: map[int64]int32{},
		xout: map[int32][]int32{}, xin: map[int32][]int32{}, xbyID: map[int64]int32{}}
}

// finishNodes fixes the nodes read at load (sorted by number) as the lists' nodes, with a
// lookup table when their numbers are close together.
func (g *adjacency) finishNodes() {
	g.base = len(g.num)
	if g.base == 0 {
		return
	}
	lo, hi := g.num[0], g.num[g.base-1]
	if span := hi - lo + 1; span <= 4*int64(g.base)+1024 {
		g.lutMin = lo
		g.lut = make([]int32, span)
		for d, n := range g.num {
			g.lut[n-lo] = int32(d) + 1
		}
	}
}
