package data

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector reports a pgx pool's statistics.
type poolCollector struct {
	pool                                       *pgxpool.Pool
	total, idle, acquired, maxConns            *prometheus.Desc
	acquires, emptyAcquires, acquireWait, news *prometheus.Desc
}

// NewPoolCollector returns a Prometheus collector of pool's statistics.
func NewPoolCollector(pool *pgxpool.Pool) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("tidings_db_pool_"+name, help, nil, nil)
	}
	return &poolCollector{
		pool:          pool,
		total:         d("conns", "Connections in the pool."),
		idle:          d("idle_conns", "Idle connections in the pool."),
		acquired:      d("acquired_conns", "Connections in use."),
		maxConns:      d("max_conns", "Most connections the pool opens."),
		acquires:      d("acquires_total", "Connections handed out."),
		emptyAcquires: d("empty_acquires_total", "Acquires that had to wait for a connection."),
		acquireWait:   d("acquire_wait_seconds_total", "Time spent waiting for a connection."),
		news:          d("new_conns_total", "Connections opened."),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.total, c.idle, c.acquired, c.maxConns, c.acquires, c.emptyAcquires, c.acquireWait, c.news} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.total, float64(s.TotalConns()))
	gauge(c.idle, float64(s.IdleConns()))
	gauge(c.acquired, float64(s.AcquiredConns()))
	gauge(c.maxConns, float64(s.MaxConns()))
	counter(c.acquires, float64(s.AcquireCount()))
	counter(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	counter(c.acquireWait, s.AcquireDuration().Seconds())
	counter(c.news, float64(s.NewConnsCount()))
}
