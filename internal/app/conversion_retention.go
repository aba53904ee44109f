package app

import (
	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/internal/lib/duration"
)

// RetentionConfig is the purge of old conversion items
// (conversion.Retention). Durations take days: "30d", "1d12h", "36h"; 0
// turns a rule off.
type RetentionConfig struct {
	// RetentionMaxAge purges every item not changed for this long.
	RetentionMaxAge duration.Duration `koanf:"retention_max_age"`
	// RetentionUnfinished purges the items that are not SUCCESS and have
	// not changed for this long.
	RetentionUnfinished duration.Duration `koanf:"retention_unfinished"`
	// RetentionInterval is how often the items are judged.
	RetentionInterval duration.Duration `koanf:"retention_interval"`
}

func (rc RetentionConfig) retention() conversion.Retention {
	return conversion.Retention{MaxAge: rc.RetentionMaxAge.Std(), Unfinished: rc.RetentionUnfinished.Std(),
		Interval: rc.RetentionInterval.Std()}
}
