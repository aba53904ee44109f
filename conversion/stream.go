package conversion

import (
	"context"
	"time"

	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/storage"
)

// PresignOutput is a short-lived URL to GET an item's output file from the
// storage itself, for a farm that fetches a streaming session's files
// without going through a manager; "" when the storage has none (a data
// directory). The URL is a credential of its own: it goes to the farm
// only, never to a log. ErrNotFound for an item the caller does not see.
func (s *Service) PresignOutput(ctx context.Context, id, name string, ttl time.Duration) (string, error) {
	p, ok := s.st.(storage.Presigner)
	if !ok {
		return "", nil
	}
	if !s.sees(ctx, id) {
		return "", hidden(id)
	}
	u, err := p.PresignGet(ctx, items.OutputKey(id, name), ttl)
	return u, s.storeErr(err)
}
