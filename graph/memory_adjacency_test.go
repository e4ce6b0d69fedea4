package graph

import (
	"slices"
	"strconv"
	"testing"
)

// TestAdjacencyCollectionsBounded: a tenant with more collections than a node record can
// number is refused, not named (and admitted) as another collection.
func TestAdjacencyCollectionsBounded(t *testing.T) {
	g := newAdjacency()
	for i := range 1<<16 - 1 {
		if c, ok := g.collIndex(strconv.Itoa(i)); !ok || g.colls[c] != strconv.Itoa(i) {
			t.Fatalf("collection %d: index %d, %v", i, c, ok)
		}
	}
	if d, ok := g.node(1, "one too many", "x"); ok {
		t.Fatalf("a node of collection #65536 was added as %d, of collection %q", d, g.colls[g.nodes[d].coll])
	}
	if d, ok := g.node(2, "7", "y"); !ok || g.colls[g.nodes[d].coll] != "7" {
		t.Fatalf("a node of a known collection: %d %v", d, ok)
	}
}

// TestAdjacencyOverlayOrder: a node's hops, the lists' and the overlay's, come in index
// order whatever order the overlay's edges were added in.
func TestAdjacencyOverlayOrder(t *testing.T) {
	g := newAdjacency()
	for n := range int64(8) {
		g.num = append(g.num, 10+n)
		g.addNodeRec(0, []byte(strconv.Itoa(int(n))))
	}
	g.finishNodes()
	t1, _ := g.typeIndex(5)
	t2, _ := g.typeIndex(3)
	e := edgeList{from: []int32{0, 0, 0, 1}, to: []int32{2, 5, 3, 0}, typ: []uint16{t1, t2, t1, t1}, id: []int64{1, 2, 3, 4}}
	g.buildLists(g.base, &e)
	g.add(9, 0, 7, t2)
	g.add(8, 0, 1, t1)
	g.add(7, 0, 4, t1)
	g.add(6, 0, 2, t1)
	g.add(5, 1, 0, t2)
	for _, dir := range []Direction{Out, In} {
		for u := range int32(8) {
			got := g.hopsOf(u, dir, nil)
			want := slices.Clone(got)
			slices.SortFunc(want, g.hopOrder)
			if !slices.Equal(got, want) {
				t.Fatalf("node %d, %v: hops %+v, want %+v", u, dir, got, want)
			}
		}
	}
	if got := g.hopsOf(0, Out, nil); len(got) != 7 {
		t.Fatalf("node 0 has %d hops out, want 7", len(got))
	}
}
