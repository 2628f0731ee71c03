package watch

// GroupsOf reports, for tests, how many groups of watchers h has and how
// many events their rings still hold.
func GroupsOf(h *Hub) (groups, held int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range h.groups {
		g.mu.Lock()
		for _, e := range g.ring {
			if e != nil {
				held++
			}
		}
		g.mu.Unlock()
	}
	return len(h.groups), held
}
