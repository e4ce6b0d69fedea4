package series

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// external consumes device topics from another MQTT v5 broker (such as Eclipse's, or EMQX) through
// a shared subscription, so several Strata nodes split the stream. Messages are
// acknowledged (manual acknowledgement) only after their commit; until then the broker
// holds them, and redelivers them if the connection drops. The session persists for an
// hour across reconnections (clean start off, stable client id).
type external struct {
	s    *Service
	cm   *autopaho.ConnectionManager
	acks *deferredAcks
	up   atomic.Bool
	// brokerDrops is the broker's own count of messages it dropped (Mosquitto publishes it
	// as $SYS/broker/publish/messages/dropped: queue limits, slow consumers), -1 unknown.
	brokerDrops atomic.Int64
	cancel      context.CancelFunc
}

// externalReceiveMaximum bounds the messages the broker sends before we acknowledge: the
// commit pipeline's depth. (The broker's own limit on messages in flight to a
// client must allow as many.)
const externalReceiveMaximum = 2000

func startExternal(ctx context.Context, s *Service) (*external, error) {
	u, err := url.Parse(s.cfg.BrokerURL)
	if err != nil || u.Host == "" {
		return nil, errors.New("the external broker URL is not a URL such as mqtt://host:1883")
	}
	switch u.Scheme {
	case "mqtt", "tcp":
		u.Scheme = "mqtt"
	case "mqtts", "ssl", "tls":
		u.Scheme = "tls"
	default:
		return nil, fmt.Errorf("the external broker URL's scheme %q is not mqtt or mqtts", u.Scheme)
	}
	var user string
	var pass []byte
	if u.User != nil {
		user = u.User.Username()
		if p, ok := u.User.Password(); ok {
			pass = []byte(p)
		}
		u.User = nil
	}
	ctx, cancel := context.WithCancel(ctx)
	e := &external{s: s, cancel: cancel, acks: newDeferredAcks()}
	e.brokerDrops.Store(-1)
	filter := "$share/" + s.cfg.BrokerGroup + "/" + s.cfg.TopicPrefix + "/+/+/#"
	clientID := s.cfg.BrokerClientID
	if clientID == "" {
		host, _ := os.Hostname()
		clientID = "strata-" + host
	}
	receiveMax := uint16(externalReceiveMaximum)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{u},
		KeepAlive:                     30,
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         3600,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(100*time.Millisecond, 10*time.Second, 500*time.Millisecond, 2),
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               user,
		ConnectPassword:               pass,
		ConnectPacketBuilder: func(c *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if c.Properties == nil {
				c.Properties = &paho.ConnectProperties{}
			}
			c.Properties.ReceiveMaximum = &receiveMax
			return c, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			// Up means subscribed (SUBACK received), not merely connected: only then does
			// the broker route devices' messages to this node.
			go func() {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				sa, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1},
					{Topic: sysDropped, QoS: 0}}})
				// A broker may refuse $SYS (its ACLs) and still grant the device topics.
				if err != nil && (sa == nil || len(sa.Reasons) == 0 || sa.Reasons[0] >= 0x80) {
					if ctx.Err() == nil {
						s.log.Warn("series: subscribing on the external broker failed", "filter", filter, "err", err)
					}
					return
				}
				e.up.Store(true)
			}()
		},
		OnConnectionDown: func() bool {
			e.up.Store(false)
			return true
		},
		OnConnectError: func(err error) {
			if ctx.Err() == nil {
				s.log.Warn("series: connecting to the external broker failed; retrying", "broker", u.Host, "err", err)
			}
		},
		ClientConfig: paho.ClientConfig{
			ClientID:          clientID,
			Session:           e.acks,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){e.receive},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		cancel()
		return nil, err
	}
	e.cm = cm
	return e, nil
}

// receive ingests one message; it blocks while the queue is full, which stops reading
// from the broker (TCP backpressure; the broker queues or drops per its own limits).
func (e *external) receive(pr paho.PublishReceived) (bool, error) {
	s := e.s
	received := s.now()
	pub := pr.Packet
	if pub.Topic == sysDropped {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(pub.Payload)), 10, 64); err == nil {
			e.brokerDrops.Store(n)
		}
		return true, nil
	}
	m := &message{source: SourceBroker, topic: pub.Topic, received: received, dup: pub.Duplicate()}
	tenant, device, ok := e.parseTopic(pub.Topic)
	if !ok {
		m.reject(ReasonTopic, "the topic is not <prefix>/<tenant>/<device>")
		m.payload = pub.Payload
	} else {
		st, err := s.registry.get(context.Background(), device)
		if err != nil {
			return true, err // not acknowledged: the broker redelivers after a reconnection
		}
		if st.exists && st.tenStr == tenant {
			m.st, m.tenant, m.device = st, st.tenant, st.id
		} else if st.exists {
			st = nil // the device is another tenant's: the topic is forged
		}
		pts, reason, detail := s.decodeMessage(st, pub.Payload, received, false)
		if reason != "" {
			m.reject(reason, detail)
			m.payload = pub.Payload
		} else {
			m.points = pts
		}
	}
	if pub.QoS > 0 && pub.PacketID != 0 {
		gen, id := e.acks.generation(), pub.PacketID
		m.ack = func(o outcome) {
			if o.err == nil {
				e.acks.release(gen, id)
			}
		}
	}
	if err := s.pipe.submit(context.Background(), m); err != nil {
		return true, err
	}
	return true, nil
}

// sysDropped is where Mosquitto reports the messages it dropped.
const sysDropped = "$SYS/broker/publish/messages/dropped"

func (e *external) parseTopic(topic string) (tenant, device string, ok bool) {
	rest, found := strings.CutPrefix(topic, e.s.cfg.TopicPrefix+"/")
	if !found {
		return "", "", false
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

func (e *external) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.cm.Disconnect(ctx)
	e.cancel()
}
