package realtime

import (
	"testing"

	"tidings/data/datatest"
)

func TestMain(m *testing.M) { datatest.Main(m) }
