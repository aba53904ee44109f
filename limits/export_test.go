package limits

import "time"

// SetClock makes k read the time from now.
func (k *Keyed) SetClock(now func() time.Time) { k.now = now }
