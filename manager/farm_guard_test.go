package manager

import "github.com/drover-dev/drover/farm"

// The manager knows farms only through its Farm interface and the wire
// types of farmapi; a farm in the same process must still fit it.
var _ Farm = (*farm.Farm)(nil)
