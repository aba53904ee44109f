package placement

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/jsonhttp"
)

// remoteFarm is a farm in another process, reached over its REST API.
type remoteFarm struct {
	req    farmapi.RegisterRequest
	base   *url.URL
	header http.Header // carries the farm token; never logged
	client *http.Client
}

var (
	_ Farm          = (*remoteFarm)(nil)
	_ StarterWith   = (*remoteFarm)(nil)
	_ Labeled       = (*remoteFarm)(nil)
	_ Via           = (*remoteFarm)(nil)
	_ Prober        = (*remoteFarm)(nil)
	_ JobSlotter    = (*remoteFarm)(nil)
	_ SessionFiler  = (*remoteFarm)(nil)
	_ StreamWatcher = (*remoteFarm)(nil)
)

func newRemoteFarm(req farmapi.RegisterRequest, token string, client *http.Client) (*remoteFarm, error) {
	u, err := url.Parse(req.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: farm url %q is not an http(s) URL", ErrBadRegistration, req.URL)
	}
	// No client timeout: starts may take as long as the pool's start
	// timeout; every call carries a context that bounds it.
	return &remoteFarm{req: req, base: u, header: bearer.Header(token), client: client}, nil
}

func (r *remoteFarm) ID() string                { return r.req.ID }
func (r *remoteFarm) Slots() int                { return r.req.Slots }
func (r *remoteFarm) JobSlots() int             { return r.req.JobSlots }
func (r *remoteFarm) Pools() []string           { return r.req.Pools }
func (r *remoteFarm) Labels() map[string]string { return r.req.Labels }
func (r *remoteFarm) Priority() int             { return r.req.Priority }
func (r *remoteFarm) Header() http.Header       { return r.header }

// do makes one call. An answer that never came (refused, reset, timed
// out) wraps ErrUnreachable, unless ctx ended first: then it was the
// caller who gave up.
func (r *remoteFarm) do(ctx context.Context, method, path string, body, out any) (int, error) {
	code, err := jsonhttp.Call(ctx, r.client, method, r.base.JoinPath(path).String(), r.header, body, out)
	switch {
	case err == nil:
	case code == 0 && ctx.Err() == nil:
		err = fmt.Errorf("farm %s: %w: %w", r.req.ID, ErrUnreachable, err)
	default:
		err = fmt.Errorf("farm %s: %w", r.req.ID, err)
	}
	return code, err
}

func (r *remoteFarm) StartInstance(ctx context.Context, pool string) (farmapi.Instance, error) {
	return r.StartInstanceWith(ctx, pool, farmapi.StartOptions{})
}

func (r *remoteFarm) StartInstanceWith(ctx context.Context, pool string, opts farmapi.StartOptions) (farmapi.Instance, error) {
	var inst farmapi.Instance
	req := farmapi.StartRequest{Pool: pool, Model: opts.Model, SessionDir: opts.SessionDir, Warm: opts.Warm}
	if code, err := r.do(ctx, http.MethodPost, farmapi.PathInstances, req, &inst); err != nil {
		if sentinel := farmapi.StartError(code); sentinel != nil {
			err = farmError{err, sentinel}
		}
		return farmapi.Instance{}, err
	}
	if inst.URL == "" {
		inst.URL = r.wsBase() + farmapi.PathInstance + url.PathEscape(inst.ID)
	}
	return inst, nil
}

// farmError is a remote farm's error answer to a start: like an
// in-process farm's, it matches the farmapi sentinel its status stands for
// (a 429 is farmapi.ErrNoSlot, a 504 farmapi.ErrStartTimeout).
type farmError struct {
	error
	sentinel error
}

func (e farmError) Unwrap() []error { return []error{e.error, e.sentinel} }

func (r *remoteFarm) StopInstance(ctx context.Context, id string) error {
	code, err := r.do(ctx, http.MethodDelete, farmapi.PathInstances+"/"+url.PathEscape(id), nil, nil)
	if code == http.StatusNotFound {
		return farmapi.ErrNotFound
	}
	return err
}

// AddSessionFiles asks the farm to fetch files into an instance's session
// directory. Its answer's status says which farmapi sentinel the error
// matches.
func (r *remoteFarm) AddSessionFiles(ctx context.Context, id string, files []farmapi.ModelFile) error {
	code, err := r.do(ctx, http.MethodPut, farmapi.PathInstances+"/"+url.PathEscape(id)+farmapi.PathFiles,
		farmapi.AddFilesRequest{Files: files}, nil)
	if err == nil {
		return nil
	}
	var sentinel error
	switch code {
	case http.StatusNotFound:
		sentinel = farmapi.ErrNotFound
	case http.StatusBadRequest:
		sentinel = farmapi.ErrBadModel
	case http.StatusConflict:
		sentinel = farmapi.ErrNoSessionDir
	case http.StatusBadGateway:
		sentinel = farmapi.ErrModelFetch
	}
	if sentinel != nil {
		return farmError{err, sentinel}
	}
	return err
}

// StreamConnected tells the farm that a client is relayed to its stream
// instance's own port (a farm advertising direct ports).
func (r *remoteFarm) StreamConnected(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), streamConnectedTimeout)
	defer cancel()
	code, err := r.do(ctx, http.MethodPost, farmapi.PathInstances+"/"+url.PathEscape(id)+farmapi.PathConnected, nil, nil)
	if code == http.StatusNotFound {
		return farmapi.ErrNotFound
	}
	return err
}

// streamConnectedTimeout bounds StreamConnected; the farm's initial-use
// time, a minute by default, is what is at stake.
const streamConnectedTimeout = 10 * time.Second

// Probe asks the farm for its status.
func (r *remoteFarm) Probe(ctx context.Context) error {
	_, err := r.do(ctx, http.MethodGet, farmapi.PathStatus, nil, nil)
	return err
}

// Serves reports whether url goes through the farm's own port.
func (r *remoteFarm) Serves(url string) bool {
	return strings.HasPrefix(url, r.wsBase()+farmapi.PathInstance)
}

func (r *remoteFarm) wsBase() string {
	ws := *r.base
	ws.Scheme = strings.Replace(ws.Scheme, "http", "ws", 1)
	return strings.TrimSuffix(ws.String(), "/")
}
