package graph

import (
	"slices"
	"strconv"
	"testing"
)

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
