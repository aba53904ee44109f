package conversion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"time"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/webhook"
)

// errSkip leaves an item as it is from an Update function.
var errSkip = errors.New("skip")

// payload is the webhook body of an item's state.
func payload(it items.Item) webhook.Payload {
	p := webhook.Payload{ID: it.ID, Name: it.Name, ConversionState: string(it.State), Files: []string{}}
	for _, f := range it.Files {
		p.Files = append(p.Files, f.Name)
	}
	return p
}

// notify sends an item's final state to its webhook, and records the
// delivery in the item; the sender reports every attempt after that
// (saveDelivery).
func (s *Service) notify(ctx context.Context, it items.Item) {
	if it.Webhook == "" {
		return
	}
	rec, err := s.hooks.Send(webhook.Delivery{URL: it.Webhook, Payload: payload(it)})
	d := items.Delivery{ID: rec.ID, State: it.State}
	if err != nil {
		s.log.Warn("webhook not sent", "item", it.ID, "err", err)
		d = items.Delivery{State: it.State, GaveUp: true, LastError: "not sent: " + err.Error(),
			LastAttempt: time.Now()}
	}
	_, err = s.items.Update(ctx, it.ID, func(cur *items.Item) error {
		switch {
		case cur.State != it.State || cur.Generation != it.Generation:
			return errSkip
		case cur.Delivery != nil && d.ID != "" && cur.Delivery.ID == d.ID:
			return errSkip // its first report came first
		}
		cur.Delivery = &d
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, items.ErrNotFound) {
		s.log.Warn("record a webhook delivery", "item", it.ID, "err", err)
	}
}

// saveDelivery records a delivery attempt in its item: the sender's
// Report. A report about a state the item has left is dropped.
func (s *Service) saveDelivery(rec webhook.Record) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 5*time.Second)
	defer cancel()
	pub := rec.Public()
	_, err := s.items.Update(ctx, rec.Payload.ID, func(it *items.Item) error {
		if string(it.State) != rec.Payload.ConversionState || it.Delivery != nil && it.Delivery.ID != rec.ID {
			return errSkip
		}
		d := items.Delivery{ID: pub.ID, State: it.State, Attempts: pub.Attempts, LastStatus: pub.LastStatus,
			LastError: pub.LastError, LastAttempt: pub.LastAttempt, GaveUp: pub.State == webhook.StateFailed}
		if pub.State == webhook.StateDelivered {
			d.Delivered = pub.LastAttempt
		}
		it.Delivery = &d
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) && !errors.Is(err, items.ErrNotFound) {
		s.log.Warn("record a webhook delivery", "item", rec.Payload.ID, "delivery", rec.ID, "err", err)
	}
}

// unsent reports whether an ended item's webhook was never handed to the
// sender: no delivery of its final state is recorded. The finisher sends
// it right after it ends the item; one that failed in between (the store
// answered its write with an error after taking it, as when Redis
// restarts under the reply) leaves the item so.
func unsent(it items.Item) bool {
	return it.Webhook != "" && it.State.Terminal() && (it.Delivery == nil || it.Delivery.State != it.State)
}

// notifyUnsent sends the webhook of an item unsent found, once across
// managers: the delivery is recorded in the item first, by the one whose
// update finds none, and sent after under the id it recorded.
func (s *Service) notifyUnsent(ctx context.Context, it items.Item) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	d := items.Delivery{ID: hex.EncodeToString(b[:]), State: it.State}
	cur, err := s.items.Update(ctx, it.ID, func(cur *items.Item) error {
		if cur.State != it.State || cur.Generation != it.Generation || !unsent(*cur) {
			return errSkip
		}
		cur.Delivery = &d
		return nil
	})
	if err != nil {
		if !errors.Is(err, errSkip) && !errors.Is(err, items.ErrNotFound) {
			s.log.Warn("record a webhook delivery", "item", it.ID, "err", err)
		}
		return
	}
	s.log.Info("sending the webhook of an item that ended without it", "item", it.ID, "state", string(it.State))
	if _, err := s.hooks.Send(webhook.Delivery{ID: d.ID, URL: cur.Webhook, Payload: payload(cur)}); err != nil {
		s.log.Warn("webhook not sent", "item", it.ID, "err", err)
	}
}

// resumeDeliveries queues again the deliveries a stopped service left
// pending, as their items recorded them.
func (s *Service) resumeDeliveries() {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	all, err := s.items.List(ctx)
	if err != nil {
		s.log.Warn("resume webhook deliveries", "err", err)
		return
	}
	var recs []webhook.Record
	for _, it := range all {
		d := it.Delivery
		if it.Webhook == "" || !it.State.Terminal() || d == nil || d.ID == "" || !d.Delivered.IsZero() || d.GaveUp ||
			d.State != it.State {
			continue
		}
		recs = append(recs, webhook.Record{Delivery: webhook.Delivery{ID: d.ID, URL: it.Webhook, Payload: payload(it)},
			State: webhook.StatePending, Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: d.LastError,
			LastAttempt: d.LastAttempt})
	}
	if len(recs) == 0 {
		return
	}
	s.log.Info("resuming webhook deliveries", "count", len(recs))
	if err := s.hooks.Resume(recs); err != nil {
		s.log.Warn("resume webhook deliveries", "err", err)
	}
}
