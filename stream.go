package drover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/manager"
)

// DefaultStreamPool is the stream pool of streaming sessions when
// Conversion.StreamPool is empty: `drover up` runs the reference viewer
// (drover worker viewer) in it.
const DefaultStreamPool = "viewer"

// streamer opens the conversion API's streaming sessions on the manager,
// in one stream pool.
type streamer struct {
	m    *manager.Manager
	pool string
}

var _ api.Streamer = (*streamer)(nil)

func (s *streamer) OpenStream(ctx context.Context, r *http.Request, _ string) (string, error) {
	key, err := s.m.OpenStreamSession(ctx, manager.StreamOptions{Pool: s.pool, Remote: r.RemoteAddr, HTTP: r})
	switch {
	case err == nil:
		return key, nil
	case errors.Is(err, manager.ErrNoCapacity), errors.Is(err, manager.ErrQueueTimeout),
		errors.Is(err, farmapi.ErrNoSlot):
		return "", fmt.Errorf("%w: %w", api.ErrNoStreamSlot, err)
	case errors.Is(err, manager.ErrUnknownPool), errors.Is(err, manager.ErrNoFarm):
		return "", fmt.Errorf("%w: pool %q: %w", api.ErrNoStreamServer, s.pool, err)
	}
	return "", err
}

func (s *streamer) AddStreamFiles(ctx context.Context, key string, files []farmapi.ModelFile) error {
	err := s.m.AddStreamFiles(ctx, key, files)
	if errors.Is(err, manager.ErrSessionNotFound) {
		return fmt.Errorf("%w: %w", api.ErrNoStreamSession, err)
	}
	return err
}

func (s *streamer) EndStream(key string) { s.m.EndStreamSession(key) }

// localModels fetches streaming sessions' files for the local farm
// straight from the conversion service, which conv returns once it is
// built (nil before: nothing to fetch yet).
func localModels(conv func() *conversion.Service) farm.ModelFetcher {
	return farm.ModelFetcherFunc(func(ctx context.Context, f farmapi.ModelFile, w io.Writer) (int64, error) {
		svc := conv()
		if svc == nil {
			return 0, errors.New("no conversion service")
		}
		obj, _, err := svc.OpenOutputByName(ctx, f.Item, f.Source)
		if err != nil {
			return 0, err
		}
		defer obj.Close()
		return io.Copy(w, obj)
	})
}
