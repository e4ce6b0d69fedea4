package series

import (
	"io"
	"sync"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho/session"
	"github.com/eclipse/paho.golang/paho/session/state"
)

// deferredAcks is the external consumer's MQTT session: paho's in-memory session, except
// that the PUBACK paho asks for when the handler returns is held until the message's
// commit releases it. (paho's own manual acknowledgements keep every unacknowledged
// message in a list scanned on each arrival and acknowledgement — quadratic in the
// messages in flight, which an ack-after-commit consumer needs by the thousand.)
//
// Commits release messages in the order they arrived, so PUBACKs go out in order, as MQTT
// asks. A reconnection starts a new generation: releases of messages received on an older
// connection are dropped, and the broker redelivers those messages (marked duplicate).
type deferredAcks struct {
	session.SessionManager
	mu       sync.Mutex
	gen      uint64
	waiting  map[uint16]*packets.Publish // paho asked to acknowledge; not committed yet
	released map[uint16]bool             // committed before paho asked
}

func newDeferredAcks() *deferredAcks {
	return &deferredAcks{SessionManager: state.NewInMemory(), waiting: map[uint16]*packets.Publish{}, released: map[uint16]bool{}}
}

// generation returns the current connection's generation, to pass to release.
func (d *deferredAcks) generation() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gen
}

func (d *deferredAcks) reset() {
	d.mu.Lock()
	d.gen++
	clear(d.waiting)
	clear(d.released)
	d.mu.Unlock()
}

// ConAckReceived starts a new generation.
func (d *deferredAcks) ConAckReceived(w io.Writer, cp *packets.Connect, ca *packets.Connack) error {
	d.reset()
	return d.SessionManager.ConAckReceived(w, cp, ca)
}

// ConnectionLost ends the generation.
func (d *deferredAcks) ConnectionLost(dp *packets.Disconnect) error {
	d.reset()
	return d.SessionManager.ConnectionLost(dp)
}

// Ack is paho asking to acknowledge a message its handler has taken.
func (d *deferredAcks) Ack(pb *packets.Publish) error {
	d.mu.Lock()
	if d.released[pb.PacketID] {
		delete(d.released, pb.PacketID)
		d.mu.Unlock()
		return d.SessionManager.Ack(pb)
	}
	d.waiting[pb.PacketID] = pb
	d.mu.Unlock()
	return nil
}

// release acknowledges a committed message received in generation gen.
func (d *deferredAcks) release(gen uint64, id uint16) {
	d.mu.Lock()
	if gen != d.gen {
		d.mu.Unlock()
		return
	}
	pb := d.waiting[id]
	if pb == nil {
		d.released[id] = true
		d.mu.Unlock()
		return
	}
	delete(d.waiting, id)
	d.mu.Unlock()
	_ = d.SessionManager.Ack(pb)
}
