package realtime

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are what the hub and its streams count. A nil *Metrics counts nothing.
type Metrics struct {
	streams         prometheus.Gauge
	delivered       prometheus.Counter
	replayed        *prometheus.CounterVec
	closes          *prometheus.CounterVec
	listenerUp      prometheus.Gauge
	reconnects      prometheus.Counter
	head            prometheus.Gauge
	read            prometheus.Counter
	deliveryLatency prometheus.Histogram
	writers         prometheus.Gauge
	writerStarts    prometheus.Counter
	replaysWaiting  prometheus.Gauge
	startReads      prometheus.Counter
	hubReadOK       prometheus.Gauge
	hubReadFailures *prometheus.CounterVec
	presenceWrites  prometheus.Counter
	presenceRows    prometheus.Counter
	ephNotifies     *prometheus.CounterVec
	presenceOnlineG prometheus.Gauge
	presenceChanges prometheus.Counter
	presenceBehindC prometheus.Counter
	signals         *prometheus.CounterVec
}

// NewMetrics creates the hub's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tidings_streams_open", Help: "WebSocket streams open on this node.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidings_events_delivered_total", Help: "Event frames written to streams.",
		}),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidings_events_replayed_total", Help: "Events sent during replays, by source (cache or table).",
		}, []string{"source"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tidings_stream_closes_total", Help: "Streams closed by the server, by close code and reason.",
		}, []string{"code", "reason"}),
		listenerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tidings_listener_up", Help: "1 while the LISTEN connection is up.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidings_listener_reconnects_total", Help: "Times the LISTEN connection was lost and had to reconnect.",
		}),
		head: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tidings_hub_head", Help: "Id of the newest event this node has read.",
		}),
		read: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidings_events_appended_total", Help: "Events appended to the log (by any writer), as this node read them.",
		}),
		deliveryLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tidings_delivery_latency_seconds",
			Help:    "From the hub reading an event (after its notification) to its frame leaving for live streams: one observation per page the hub writes to parked streams (when the last leaves), and per burst a stream's writer sends (of its oldest event).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 0.1 ms to 3.3 s
		}),
		writers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tidings_stream_writers", Help: "Streams with a writer goroutine running (replaying, catching up, or sending replies, a ping or a close); the others are parked, and the hub writes their events itself.",
		}),
		writerStarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidings_stream_writer_starts_total", Help: "Writer goroutines started for parked streams: a socket that did not take an event at once, a reply, a ping or a close.",
		}),
		replaysWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tidings_table_replays_waiting", Help: "Streams waiting for a turn to read the event table (HubConfig.TableReplays run at once).",
		}),
		startReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tidings_stream_start_reads_total", Help: "Reads of the log's watermark and floor made for opening streams; streams opening together share one.",
		}),
	}
	m.hubReadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tidings_hub_read_ok", Help: "1 while the hub's last read of the event log succeeded; 0 while its reads fail or time out (the node delivers nothing new).",
	})
	m.hubReadFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidings_hub_read_failures_total", Help: "Reads of the event log by the hub that failed, by reason: timeout (no answer within the read timeout) or error.",
	}, []string{"reason"})
	m.presenceWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tidings_presence_writes_total", Help: "Presence transactions this node committed in PostgreSQL: flushes of its changes, full replacements and beats.",
	})
	m.presenceRows = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tidings_presence_rows_total", Help: "Presence rows this node wrote (users added to or removed from its set).",
	})
	m.ephNotifies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidings_ephemeral_notifies_total", Help: "Notifications this node sent on the ephemeral channels, by channel (presence, signals).",
	}, []string{"channel"})
	m.presenceOnlineG = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tidings_presence_online", Help: "Users online in this node's view of every node.",
	})
	m.presenceChanges = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tidings_presence_changes_total", Help: "Presence changes in this node's view (users coming online or going offline), each sent to every signed-in stream of the node.",
	})
	m.signals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tidings_signals_total", Help: "Signals this node's streams sent, by result: sent (in a notification), dropped (the node's queue was full, or the notification failed).",
	}, []string{"result"})
	m.presenceBehindC = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tidings_presence_view_behind_total", Help: "Presence frames that waited for this node to read every node's set again, because its view was behind the tables (a notification late or lost, a node dead by the database's clock).",
	})
	reg.MustRegister(m.presenceWrites, m.presenceRows, m.ephNotifies, m.presenceOnlineG, m.presenceChanges, m.presenceBehindC, m.signals)
	reg.MustRegister(m.hubReadOK, m.hubReadFailures)
	reg.MustRegister(m.streams, m.delivered, m.replayed, m.closes, m.listenerUp, m.reconnects, m.head, m.read, m.deliveryLatency, m.writers, m.writerStarts, m.replaysWaiting, m.startReads)
	return m
}

func (m *Metrics) streamOpened() {
	if m != nil {
		m.streams.Inc()
	}
}

func (m *Metrics) streamClosed() {
	if m != nil {
		m.streams.Dec()
	}
}

// sent counts a burst of n deliveries; for a live burst, at is when the hub read its oldest
// event, so the latency observed is the burst's worst.
func (m *Metrics) sent(n int, at time.Time, replay string) {
	if m == nil || n == 0 {
		return
	}
	m.delivered.Add(float64(n))
	if replay != "" {
		m.replayed.WithLabelValues(replay).Add(float64(n))
		return
	}
	m.deliveryLatency.Observe(time.Since(at).Seconds())
}

func (m *Metrics) closed(r CloseReason) {
	if m != nil {
		m.closes.WithLabelValues(strconv.Itoa(int(r.Code)), r.Reason).Inc()
	}
}

func (m *Metrics) listener(up bool) {
	if m == nil {
		return
	}
	if up {
		m.listenerUp.Set(1)
	} else {
		m.listenerUp.Set(0)
		m.reconnects.Inc()
	}
}

func (m *Metrics) advanced(head int64, n int) {
	if m != nil {
		m.head.Set(float64(head))
		m.read.Add(float64(n))
	}
}

// writer counts a stream's writer goroutine starting (+1) or ending (-1); restart says that it
// starts for a parked stream.
func (m *Metrics) writer(delta int, restart bool) {
	if m == nil {
		return
	}
	m.writers.Add(float64(delta))
	if restart {
		m.writerStarts.Inc()
	}
}

// replayWaiting counts a stream starting (+1) or ending (-1) a wait for a table replay slot.
func (m *Metrics) replayWaiting(delta int) {
	if m != nil {
		m.replaysWaiting.Add(float64(delta))
	}
}

// hubRead counts one read of the event log by the hub: whether it succeeded, or else whether it
// timed out.
func (m *Metrics) hubRead(ok, timedOut bool) {
	switch {
	case m == nil:
	case ok:
		m.hubReadOK.Set(1)
	case timedOut:
		m.hubReadOK.Set(0)
		m.hubReadFailures.WithLabelValues("timeout").Inc()
	default:
		m.hubReadOK.Set(0)
		m.hubReadFailures.WithLabelValues("error").Inc()
	}
}

// startRead counts one read of the log's bounds for opening streams.
func (m *Metrics) startRead() {
	if m != nil {
		m.startReads.Inc()
	}
}

// presenceWrite counts a presence transaction that wrote rows rows (a beat writes none but
// its node's own) and sent a notification or not; ok says it committed.
func (m *Metrics) presenceWrite(rows int, notified, ok bool) {
	if m == nil || !ok {
		return
	}
	m.presenceWrites.Inc()
	m.presenceRows.Add(float64(rows))
	if notified {
		m.ephNotifies.WithLabelValues("presence").Inc()
	}
}

// presenceChanged counts a change of the view, after which n users are online in it.
func (m *Metrics) presenceChanged(n int) {
	if m != nil {
		m.presenceOnlineG.Set(float64(n))
		m.presenceChanges.Inc()
	}
}

// signal counts one signal refused before it was queued.
func (m *Metrics) signal(sent bool) {
	if m == nil {
		return
	}
	if sent {
		m.signals.WithLabelValues("sent").Inc()
	} else {
		m.signals.WithLabelValues("dropped").Inc()
	}
}

// signalsSent counts a notification of n signals; ok says it was sent.
func (m *Metrics) signalsSent(n int, ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.ephNotifies.WithLabelValues("signals").Inc()
		m.signals.WithLabelValues("sent").Add(float64(n))
	} else {
		m.signals.WithLabelValues("dropped").Add(float64(n))
	}
}

// presenceBehind counts a presence frame that waited for the view to be read again.
func (m *Metrics) presenceBehind() {
	if m != nil {
		m.presenceBehindC.Inc()
	}
}
