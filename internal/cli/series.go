package cli

import (
	"net/url"
	"strings"

	"github.com/stratadb/strata/series"
)

// seriesConfig builds the device readings configuration from the settings.
func (e *env) seriesConfig() (series.Config, error) {
	var c series.Config
	addr := strings.TrimSpace(e.vals.str("mqtt-addr"))
	if addr != "" && !strings.EqualFold(addr, "off") {
		var err error
		if addr, err = e.vals.hostPort("mqtt-addr", false); err != nil {
			return c, err
		}
		c.MQTTAddr = addr
		// The default port may be taken (another broker, another strata): then run
		// without the embedded broker rather than not at all. A chosen address must work.
		c.MQTTAddrOptional = e.vals.source["mqtt-addr"] == "default"
	}
	for _, name := range []string{"mqtt-broker-url", "redis-url"} {
		if v := e.vals.str(name); v != "" {
			if u, err := url.Parse(v); err != nil || u.Host == "" || u.Scheme == "" {
				return c, settingError(name, "is not a URL with a scheme and a host")
			}
		}
	}
	c.BrokerURL = e.vals.str("mqtt-broker-url")
	c.BrokerClientID = e.vals.str("mqtt-client-id")
	c.RedisURL = e.vals.str("redis-url")
	c.RedisStream = e.vals.str("redis-stream")
	return c, nil
}
