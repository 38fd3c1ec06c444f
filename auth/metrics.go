package auth

import "github.com/prometheus/client_golang/prometheus"

// NewCollector returns a Prometheus collector of m's password hashing (HashStats).
func NewCollector(m *Manager) prometheus.Collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, nil)
	}
	return &collector{
		m:       m,
		slots:   d("tidings_password_hash_slots", "Password hashes (argon2id) that may run at once on this node."),
		running: d("tidings_password_hashes_running", "Password hashes running now."),
		total:   d("tidings_password_hashes_total", "Password hashes run."),
		refused: d("tidings_password_hashes_refused_total", "Password checks refused with 503 busy: no slot within the wait, or the queue full."),
	}
}

type collector struct {
	m                              *Manager // set at construction
	slots, running, total, refused *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.slots, c.running, c.total, c.refused} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.m.HashStats()
	ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(s.Slots))
	ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(s.Running))
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.CounterValue, float64(s.Total))
	ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(s.Refused))
}
