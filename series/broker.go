package series

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// The embedded broker is mochi-mqtt with one hook that authenticates devices, confines
// each to its own topic, and ingests what they publish.
//
// How the PUBACK waits for the commit: mochi calls OnPublish hooks on the client's read
// goroutine before it writes the PUBACK (an inline subscription, by contrast, is called
// after the PUBACK is written, too late). The hook decodes the message, queues it, and
// returns packets.ErrRejectPacket, which makes mochi drop the packet without
// acknowledging or forwarding it. After the batch holding the message commits, the
// acknowledging goroutine writes the PUBACK (PUBREC for QoS 2, recorded in the client's
// in-flight state so mochi completes the PUBREL/PUBCOMP exchange) straight to the
// client's connection, all of a batch's acknowledgements for one client in one write. A
// crash before the commit leaves the message unacknowledged, and the client resends it.

type broker struct {
	s       *Service
	srv     *mqtt.Server
	ln      net.Listener
	pending map[*mqtt.Client]*bytes.Buffer // acknowledgements to write; owned by the acknowledging goroutine
	drops   atomic.Int64                   // mochi's drops already exported
	closed  atomic.Bool
}

// brokerCapabilities: QoS up to 2, 1024 unacknowledged messages per client (the client is
// told in CONNACK; the pipeline's queue bounds memory whatever clients do), packets up to
// 128 KiB, no retained messages (readings are not state), no wildcard subscriptions for
// devices (they may not subscribe at all).
func brokerCapabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	c.MaximumPacketSize = 128 << 10
	c.RetainAvailable = 0
	c.ReceiveMaximum = 1024
	c.MaximumSessionExpiryInterval = 3600
	return c
}

func startBroker(s *Service, addr string) (*broker, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &broker{s: s, ln: ln, pending: map[*mqtt.Client]*bytes.Buffer{}}
	b.srv = mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: brokerCapabilities(), Logger: slog.New(scrubHandler{s.log.Handler()})})
	if err := b.srv.AddHook(&ingestHook{b: b}, nil); err != nil {
		_ = ln.Close()
		return nil, err
	}
	if err := b.srv.AddListener(listeners.NewNet("strata", ln)); err != nil {
		_ = ln.Close()
		return nil, err
	}
	if err := b.srv.Serve(); err != nil {
		_ = ln.Close()
		return nil, err
	}
	s.pipe.afterAcks(b.flushAcks)
	return b, nil
}

// Addr returns the address the broker listens on.
func (b *broker) Addr() string { return b.ln.Addr().String() }

func (b *broker) clients() int64 { return atomic.LoadInt64(&b.srv.Info.ClientsConnected) }

// stopAccepting closes the listener: no new connections, while connected clients keep
// publishing until the pipeline drains.
func (b *broker) stopAccepting() { _ = b.ln.Close() }

func (b *broker) close() {
	if b.closed.CompareAndSwap(false, true) {
		_ = b.srv.Close()
	}
}

func (b *broker) syncDrops(c prometheus.Counter) {
	n := atomic.LoadInt64(&b.srv.Info.MessagesDropped) + atomic.LoadInt64(&b.srv.Info.InflightDropped)
	if prev := b.drops.Swap(n); n > prev {
		c.Add(float64(n - prev))
	}
}

// queueAck records the acknowledgement of a QoS 1 or 2 message for the batch's flush.
func (b *broker) queueAck(cl *mqtt.Client, id uint16, qos byte, o outcome) {
	if o.err != nil || cl.Closed() {
		return // not committed, or the connection is gone: the client resends
	}
	buf := b.pending[cl]
	if buf == nil {
		buf = &bytes.Buffer{}
		b.pending[cl] = buf
	}
	typ := packets.Puback
	if qos == 2 {
		typ = packets.Pubrec
		cl.State.Inflight.Set(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: id, Created: time.Now().Unix()})
	}
	code := reasonCode(o.reason)
	if cl.Properties.ProtocolVersion == 5 && code >= 0x80 {
		buf.Write([]byte{typ << 4, 3, byte(id >> 8), byte(id), code})
	} else {
		buf.Write([]byte{typ << 4, 2, byte(id >> 8), byte(id)})
	}
}

// reasonCode is the MQTT v5 reason code of an outcome: success, not authorized (the
// device or its key is not accepted) or payload format invalid.
func reasonCode(reason string) byte {
	switch reason {
	case "":
		return 0
	case ReasonUnknownDevice, ReasonDisabled, ReasonNoKey, ReasonForged, ReasonPlaintext:
		return packets.ErrNotAuthorized.Code
	case ReasonStorage:
		return packets.ErrUnspecifiedError.Code
	}
	return packets.ErrPayloadFormatInvalid.Code
}

// flushAcks writes each client's acknowledgements in one write, with a deadline so a
// client that does not read cannot stall the others.
func (b *broker) flushAcks() {
	for cl, buf := range b.pending {
		delete(b.pending, cl)
		if cl.Closed() || cl.Net.Conn == nil {
			continue
		}
		_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		cl.Lock()
		_, err := cl.Net.Conn.Write(buf.Bytes())
		cl.Unlock()
		if err != nil {
			cl.Stop(err)
		}
	}
}

// ingestHook is the broker's only hook.
type ingestHook struct {
	mqtt.HookBase
	b *broker
}

func (h *ingestHook) ID() string { return "strata-series" }

func (h *ingestHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnPublish
}

// OnConnectAuthenticate accepts a device whose username is its id and whose password is
// its current one (or its previous one, during a rotation's grace).
func (h *ingestHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := h.b.s.registry.get(ctx, string(pk.Connect.Username))
	if err != nil || !st.exists || st.disabled {
		return false
	}
	return st.checkPassword(pk.Connect.Password, h.b.s.now())
}

// OnACLCheck lets a device publish to <prefix>/<tenant>/<device> and below, and read
// nothing.
func (h *ingestHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !write {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := h.b.s.registry.get(ctx, string(cl.Properties.Username))
	if err != nil || !st.exists {
		return false
	}
	own := h.b.s.cfg.TopicPrefix + "/" + st.tenStr + "/" + st.idStr
	return topic == own || strings.HasPrefix(topic, own+"/")
}

// OnPublish ingests a device's message and keeps mochi from acknowledging it.
func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	s := h.b.s
	received := s.now()
	ctx := context.Background()
	st, err := s.registry.get(ctx, string(cl.Properties.Username))
	m := &message{source: SourceMQTT, topic: pk.TopicName, received: received, dup: pk.FixedHeader.Dup}
	if err != nil {
		// The device could not be read (PostgreSQL down): end the connection without
		// acknowledging; the client reconnects later and resends.
		cl.Stop(err)
		return pk, packets.ErrRejectPacket
	}
	if st.exists {
		m.st, m.tenant, m.device = st, st.tenant, st.id
	}
	pts, reason, detail := s.decodeMessage(st, pk.Payload, received, false)
	if reason != "" {
		m.reject(reason, detail)
		m.payload = bytes.Clone(pk.Payload)
	} else {
		m.points = pts
	}
	if qos := pk.FixedHeader.Qos; qos > 0 {
		id := pk.PacketID
		m.ack = func(o outcome) { h.b.queueAck(cl, id, qos, o) }
	}
	if err := s.pipe.submit(ctx, m); err != nil {
		cl.Stop(err) // stopping: the client resends after reconnecting
	}
	return pk, packets.ErrRejectPacket
}

// scrubHandler keeps packets (and so payloads) out of mochi's log lines.
type scrubHandler struct{ slog.Handler }

func (h scrubHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

func (h scrubHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, "mqtt broker: "+r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "pk", "packet", "payload":
		default:
			out.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h scrubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return scrubHandler{h.Handler.WithAttrs(as)}
}
func (h scrubHandler) WithGroup(g string) slog.Handler { return scrubHandler{h.Handler.WithGroup(g)} }
