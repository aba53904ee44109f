package conversion

import "context"

// PurgeOnce runs one pass of retention, as the loop does, and returns the
// ids it purged.
func (s *Service) PurgeOnce(ctx context.Context) ([]string, error) { return s.purgeOnce(ctx) }
