package population

import (
	"container/heap"
	"slices"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// island is one sub-population with its own MAP-Elites grid. Islands evolve apart and meet
// only through migration, which keeps the search from collapsing onto one idea.
type island struct {
	id int
	// members in a fixed order (filing order, with removals swapped in from the end), so that
	// sampling by index is deterministic.
	members []*member
	index   map[*member]int
	// ranked holds the members best first, kept sorted as programs come and go (a binary
	// search and a pointer move each), so sampling and migration never sort the island.
	ranked []*member
	grid   map[string]*member // cell key → the fittest program filed there
	codes  map[string]int     // code → programs holding it, to skip duplicate migrants
	best   *member
	// generations counts the generated results filed to the island; it paces migration.
	generations int64
	migrations  int64
	// recent holds the latest attempts, oldest first, for "previous attempts" in prompts.
	recent []protocol.Program
	// seen holds the novelty sketches of the latest evaluated programs, newest first.
	seen []string
}

func newIsland(id int) *island {
	return &island{id: id, index: map[*member]int{}, grid: map[string]*member{}, codes: map[string]int{}}
}

func (isl *island) add(m *member) {
	isl.index[m] = len(isl.members)
	isl.members = append(isl.members, m)
	isl.codes[m.Code]++
	i := isl.rank(m)
	isl.ranked = slices.Insert(isl.ranked, i, m)
}

// rank is m's place in ranked: the first member m is better than.
func (isl *island) rank(m *member) int {
	i, _ := slices.BinarySearchFunc(isl.ranked, m, func(e, t *member) int {
		switch {
		case e == t:
			return 0
		case worse(e, t):
			return 1
		}
		return -1
	})
	return i
}

func (isl *island) remove(m *member) {
	i, ok := isl.index[m]
	if !ok {
		return
	}
	last := len(isl.members) - 1
	isl.members[i] = isl.members[last]
	isl.index[isl.members[i]] = i
	isl.members[last] = nil
	isl.members = isl.members[:last]
	delete(isl.index, m)
	if r := isl.rank(m); r < len(isl.ranked) && isl.ranked[r] == m {
		isl.ranked = slices.Delete(isl.ranked, r, r+1)
	}
	if isl.codes[m.Code]--; isl.codes[m.Code] <= 0 {
		delete(isl.codes, m.Code)
	}
	if m.cell != "" && isl.grid[m.cell] == m {
		delete(isl.grid, m.cell)
		m.cell = ""
	}
}

// remember records an attempt, keeping the newest limit.
func (isl *island) remember(a protocol.Program, limit int) {
	if len(isl.recent) >= limit {
		copy(isl.recent, isl.recent[len(isl.recent)-limit+1:])
		isl.recent = isl.recent[:limit-1]
	}
	isl.recent = append(isl.recent, a)
}

// evictHeap keeps members worst first; each member knows its place, so that a cell holder
// displaced by a fitter program moves to the other heap in O(log n).
type evictHeap struct{ ms []*member }

func (h *evictHeap) Len() int           { return len(h.ms) }
func (h *evictHeap) Less(i, j int) bool { return worse(h.ms[i], h.ms[j]) }
func (h *evictHeap) Swap(i, j int) {
	h.ms[i], h.ms[j] = h.ms[j], h.ms[i]
	h.ms[i].heapIdx, h.ms[j].heapIdx = i, j
}
func (h *evictHeap) Push(x any) {
	m := x.(*member)
	m.heapIdx = len(h.ms)
	h.ms = append(h.ms, m)
}
func (h *evictHeap) Pop() any {
	last := len(h.ms) - 1
	m := h.ms[last]
	h.ms[last] = nil
	h.ms = h.ms[:last]
	m.heapIdx = -1
	return m
}

func (h *evictHeap) push(m *member) { heap.Push(h, m) }
func (h *evictHeap) pop() *member   { return heap.Pop(h).(*member) }
func (h *evictHeap) remove(m *member) {
	if m.heapIdx >= 0 && m.heapIdx < len(h.ms) && h.ms[m.heapIdx] == m {
		heap.Remove(h, m.heapIdx)
	}
}
