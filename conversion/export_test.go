package conversion

import "context"

// PurgeOnce runs one pass of retention, as the loop does, and returns the
// ids it purged.
func (s *Service) PurgeOnce(ctx context.Context) ([]string, error) { return s.purgeOnce(ctx) }

// StagingDir is where an attempt's outputs wait, and ManifestName the
// file that lists them there.
func StagingDir(item string, gen int, token string) string { return staging(item, gen, token) }

const ManifestName = manifestName
