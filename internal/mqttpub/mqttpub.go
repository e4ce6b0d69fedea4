// Package mqttpub is a minimal MQTT 3.1.1 publisher for load and fault tests: QoS 1
// messages pipelined over one connection with a window of unacknowledged ones, and a
// callback per acknowledgement. It keeps its own cost low so that benchmarks measure the
// broker and what is behind it, not the client; it is not a general MQTT client.
package mqttpub

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Conn is a connected publisher.
type Conn struct {
	c      net.Conn
	w      *bufio.Writer
	wmu    sync.Mutex
	window chan struct{}
	mu     sync.Mutex
	next   uint16
	owner  map[uint16]func(reason byte)
	done   chan struct{}
	err    error
}

// Dial connects and authenticates (MQTT 3.1.1, clean session). window bounds the
// messages sent but not yet acknowledged.
func Dial(ctx context.Context, addr, clientID, user, pass string, window int) (*Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{c: nc, w: bufio.NewWriterSize(nc, 64<<10), window: make(chan struct{}, window), owner: map[uint16]func(byte){},
		done: make(chan struct{})}
	var body []byte
	body = appendString(body, "MQTT")
	flags := byte(0x02) // clean session
	if user != "" {
		flags |= 0x80
	}
	if pass != "" {
		flags |= 0x40
	}
	body = append(body, 4, flags, 0, 60)
	body = appendString(body, clientID)
	if user != "" {
		body = appendString(body, user)
	}
	if pass != "" {
		body = appendString(body, pass)
	}
	pkt := appendHeader(nil, 0x10, len(body))
	if _, err := nc.Write(append(pkt, body...)); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack := make([]byte, 4)
	if _, err := io.ReadFull(nc, ack); err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading CONNACK: %w", err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		nc.Close()
		return nil, fmt.Errorf("connection refused (CONNACK code %d)", ack[3])
	}
	_ = nc.SetReadDeadline(time.Time{})
	go c.readLoop()
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, typ byte, n int) []byte {
	b = append(b, typ)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// ErrClosed is returned for publishes after the connection ended.
var ErrClosed = errors.New("mqttpub: connection closed")

// Publish sends payload to topic at QoS 1 and returns at once (waiting only while the
// window is full); onAck runs on the reading goroutine when the broker acknowledges it,
// with the reason code (always 0 in MQTT 3.1.1). Call Flush to push buffered messages out.
func (c *Conn) Publish(ctx context.Context, topic string, payload []byte, onAck func(reason byte)) error {
	select {
	case c.window <- struct{}{}:
	case <-c.done:
		return c.closedErr()
	case <-ctx.Done():
		return ctx.Err()
	}
	c.mu.Lock()
	for {
		c.next++
		if c.next == 0 {
			c.next = 1
		}
		if _, busy := c.owner[c.next]; !busy {
			break
		}
	}
	id := c.next
	c.owner[id] = onAck
	c.mu.Unlock()
	n := 2 + len(topic) + 2 + len(payload)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	hdr := appendHeader(make([]byte, 0, 8), 0x32, n)
	hdr = appendString(hdr, topic)
	hdr = binary.BigEndian.AppendUint16(hdr, id)
	if _, err := c.w.Write(hdr); err != nil {
		return err
	}
	if _, err := c.w.Write(payload); err != nil {
		return err
	}
	if len(c.window) == cap(c.window) || c.w.Buffered() > 32<<10 {
		return c.w.Flush()
	}
	return nil
}

// Flush writes buffered messages.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.Flush()
}

// Pending returns how many messages are sent but not acknowledged.
func (c *Conn) Pending() int { return len(c.window) }

// Done is closed when the connection ends.
func (c *Conn) Done() <-chan struct{} { return c.done }

func (c *Conn) closedErr() error {
	if c.err != nil {
		return c.err
	}
	return ErrClosed
}

func (c *Conn) readLoop() {
	r := bufio.NewReaderSize(c.c, 64<<10)
	defer close(c.done)
	for {
		typ, err := r.ReadByte()
		if err != nil {
			c.err = err
			return
		}
		n, mult := 0, 1
		for {
			b, err := r.ReadByte()
			if err != nil {
				c.err = err
				return
			}
			n += int(b&0x7f) * mult
			mult *= 128
			if b&0x80 == 0 {
				break
			}
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			c.err = err
			return
		}
		if typ>>4 != 4 || n < 2 { // only PUBACKs matter here (PINGRESP and others are ignored)
			continue
		}
		id := binary.BigEndian.Uint16(body)
		reason := byte(0)
		if n > 2 {
			reason = body[2]
		}
		c.mu.Lock()
		fn := c.owner[id]
		delete(c.owner, id)
		c.mu.Unlock()
		if fn != nil {
			fn(reason)
		}
		select {
		case <-c.window:
		default:
		}
	}
}

// Close ends the connection (with DISCONNECT).
func (c *Conn) Close() error {
	c.wmu.Lock()
	_, _ = c.w.Write([]byte{0xe0, 0})
	_ = c.w.Flush()
	c.wmu.Unlock()
	err := c.c.Close()
	<-c.done
	return err
}
