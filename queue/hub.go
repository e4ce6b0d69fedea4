package queue

import (
	"strconv"
	"strings"
	"sync"
)

// hub wakes this process's waiting claims when jobs become runnable: by queue id for a
// tenant's queue, by name for workers of every tenant's queue of that name. A waiter
// takes the channel before looking for jobs and waits on it after finding none, so a
// wake-up between the two is never missed.
type hub struct {
	mu     sync.Mutex
	byID   map[int64]chan struct{}
	byName map[string]chan struct{}
}

func newHub() *hub {
	return &hub{byID: map[int64]chan struct{}{}, byName: map[string]chan struct{}{}}
}

// waitID returns a channel closed at the next wake-up of queue id.
func (h *hub) waitID(id int64) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.byID[id]
	if !ok {
		ch = make(chan struct{})
		h.byID[id] = ch
	}
	return ch
}

// waitName returns a channel closed at the next wake-up of any queue named name.
func (h *hub) waitName(name string) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	ch, ok := h.byName[name]
	if !ok {
		ch = make(chan struct{})
		h.byName[name] = ch
	}
	return ch
}

// wake wakes the waiters of queue id, named name.
func (h *hub) wake(id int64, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ch, ok := h.byID[id]; ok {
		close(ch)
		delete(h.byID, id)
	}
	if ch, ok := h.byName[name]; ok {
		close(ch)
		delete(h.byName, name)
	}
}

// wakeAll wakes every waiter: notifications may have been missed.
func (h *hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, ch := range h.byID {
		close(ch)
		delete(h.byID, id)
	}
	for n, ch := range h.byName {
		close(ch)
		delete(h.byName, n)
	}
}

// notified handles a notification "<id>:<name>" from any node.
func (h *hub) notified(payload string) {
	idStr, name, _ := strings.Cut(payload, ":")
	id, err := strconv.ParseInt(idStr, 10, 64)
	if err != nil {
		return
	}
	h.wake(id, name)
}

// notifyPayload is the notification naming queue id.
func notifyPayload(id int64, name string) string {
	return strconv.FormatInt(id, 10) + ":" + name
}
