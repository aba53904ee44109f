package conversion

import (
	"context"
	"errors"
	"time"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
)

// DefaultRetentionInterval is Retention.Interval's default.
const DefaultRetentionInterval = 10 * time.Minute

// The reasons of a purge, the label of drover_conversion_items_purged_total.
const (
	purgeAge        = "age"
	purgeUnfinished = "unfinished"
)

// Retention is the optional purge of old items. An item's age is the time
// since its last change (items.Item.Updated): a reconversion, a result, a
// webhook delivery, an uploaded file. Each rule is off at zero.
type Retention struct {
	// MaxAge purges every item that has not changed for this long,
	// SUCCESS ones included.
	MaxAge time.Duration
	// Unfinished purges the items that are not SUCCESS (UPLOADING,
	// PENDING or ERROR) and have not changed for this long: abandoned
	// uploads, failed conversions, conversions that never ran.
	Unfinished time.Duration
	// Interval is how often the items are judged; 0 for
	// DefaultRetentionInterval.
	Interval time.Duration
}

// On reports whether a rule is set.
func (r Retention) On() bool { return r.MaxAge > 0 || r.Unfinished > 0 }

// judge says whether it is to be purged at now, and why.
func (r Retention) judge(it *items.Item, now time.Time) (string, bool) {
	age := now.Sub(it.Updated)
	switch {
	case r.Unfinished > 0 && it.State != items.StateSuccess && age >= r.Unfinished:
		return purgeUnfinished, true
	case r.MaxAge > 0 && age >= r.MaxAge:
		return purgeAge, true
	}
	return "", false
}

// retentionLoop purges on a ticker until the service stops. It is the
// only goroutine that purges in this service; other managers' may purge
// the same items at once, and DeleteUnchanged settles which one does.
func (s *Service) retentionLoop() {
	t := time.NewTicker(s.cfg.Retention.Interval)
	defer t.Stop()
	var again []string
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(s.ctx, max(s.cfg.Retention.Interval, time.Minute))
			// A farm's upload that passed its lease check before the
			// purge may land after it: the items purged last time lose
			// their directory again.
			for _, id := range again {
				s.dropItemFiles(ctx, id)
			}
			again, _ = s.purgeOnce(ctx)
			cancel()
		}
	}
}

// purgeOnce judges every item once and purges those the rules condemn.
// It returns the ids it purged.
func (s *Service) purgeOnce(ctx context.Context) ([]string, error) {
	all, err := s.items.List(ctx)
	if err != nil {
		if s.ctx.Err() == nil {
			s.log.Warn("retention: list items", "err", err)
		}
		return nil, s.storeErr(err)
	}
	now := s.now()
	var purged []string
	for i := range all {
		it := &all[i]
		reason, ok := s.cfg.Retention.judge(it, now)
		if !ok {
			continue
		}
		done, err := s.purge(ctx, it, reason, now)
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("retention: purge an item", "item", it.ID, "err", err)
			}
			continue
		}
		if done {
			purged = append(purged, it.ID)
		}
	}
	return purged, nil
}

// purge removes an item judged by its version it, if it is still that
// version: its record (which moves LastUpdated and publishes the delete,
// as a client's delete does), then its job, whose farm loses the lease,
// then its files. It reports false when another manager purged the item
// first or it changed since it was judged.
func (s *Service) purge(ctx context.Context, it *items.Item, reason string, now time.Time) (bool, error) {
	err := s.items.DeleteUnchanged(ctx, it.ID, it.Updated)
	switch {
	case errors.Is(err, items.ErrNotFound), errors.Is(err, items.ErrChanged):
		return false, nil
	case err != nil:
		return false, s.storeErr(err)
	}
	// The item is gone: its job and files go too, even if the service
	// is stopping.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	s.metrics.purged.WithLabelValues(reason).Inc()
	s.log.Info("item purged", "item", it.ID, "name", it.Name, "state", string(it.State), "reason", reason,
		"unchanged_for", now.Sub(it.Updated).Round(time.Second).String())
	if err := s.q.Delete(ctx, jobID(it.ID, it.Generation)); err != nil && !errors.Is(err, queue.ErrNotFound) {
		s.log.Warn("remove the job of a purged item", "item", it.ID, "err", err)
	}
	s.dropItemFiles(ctx, it.ID)
	return true, nil
}

// dropItemFiles removes the files of an item that is gone.
func (s *Service) dropItemFiles(ctx context.Context, id string) {
	if _, err := s.st.DeletePrefix(context.WithoutCancel(ctx), items.Dir(id)); err != nil {
		s.log.Warn("remove the files of a removed item", "item", id, "err", err)
	}
}

func (s *Service) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}
