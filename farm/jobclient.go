package farm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/jsonhttp"
)

// JobClient is a JobSource over the managers' job API. Any manager serves
// any farm: a call that a manager does not answer, or answers 5xx, moves
// the client on to the next manager for its next call.
type JobClient struct {
	managers func() []string
	header   http.Header
	client   *http.Client

	mu  sync.Mutex
	cur int
}

var (
	_ JobSource       = (*JobClient)(nil)
	_ OutputURLSource = (*JobClient)(nil)
)

// NewJobClient calls the managers that managers returns (base URLs, as
// the agent knows them), with the farm token.
func NewJobClient(managers func() []string, token string, client *http.Client) *JobClient {
	if client == nil {
		client = &http.Client{}
	}
	return &JobClient{managers: managers, header: bearer.Header(token), client: client}
}

// base is the manager to call now.
func (c *JobClient) base() (string, error) {
	ms := c.managers()
	if len(ms) == 0 {
		return "", fmt.Errorf("%w: no manager known", farmapi.ErrJobsUnavailable)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return ms[c.cur%len(ms)], nil
}

// next moves on to the next manager after base failed.
func (c *JobClient) next(base string) {
	ms := c.managers()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(ms) > 0 && ms[c.cur%len(ms)] == base {
		c.cur++
	}
}

// mapErr turns an HTTP outcome into farmapi's errors, and moves on to
// another manager after one that is unavailable.
func (c *JobClient) mapErr(base string, code int, err error) error {
	if err == nil {
		return nil
	}
	if sentinel := farmapi.JobError(code); sentinel != nil {
		if errors.Is(sentinel, farmapi.ErrJobsUnavailable) {
			c.next(base)
		}
		return fmt.Errorf("%w: %w", sentinel, err)
	}
	if code == 0 { // no answer
		c.next(base)
		return fmt.Errorf("%w: %w", farmapi.ErrJobsUnavailable, err)
	}
	return err
}

func (c *JobClient) call(ctx context.Context, path string, body, out any) error {
	base, err := c.base()
	if err != nil {
		return err
	}
	code, err := jsonhttp.Call(ctx, c.client, http.MethodPost, base+path, c.header, body, out)
	return c.mapErr(base, code, err)
}

func jobPath(id, rest string) string { return farmapi.PathJobs + "/" + url.PathEscape(id) + rest }

// LeaseJobs implements JobSource: a long poll.
func (c *JobClient) LeaseJobs(ctx context.Context, req farmapi.LeaseRequest) ([]farmapi.JobLease, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(req.WaitMS)*time.Millisecond+10*time.Second)
	defer cancel()
	var resp farmapi.LeaseResponse
	err := c.call(ctx, farmapi.PathJobLease, req, &resp)
	return resp.Jobs, err
}

// RenewJob implements JobSource.
func (c *JobClient) RenewJob(ctx context.Context, id, token string) (time.Time, error) {
	var resp farmapi.RenewResponse
	err := c.call(ctx, jobPath(id, "/renew"), farmapi.RenewRequest{Token: token}, &resp)
	return resp.Expires, err
}

// CompleteJob implements JobSource.
func (c *JobClient) CompleteJob(ctx context.Context, id string, req farmapi.CompleteRequest) (farmapi.JobAck, error) {
	var ack farmapi.JobAck
	err := c.call(ctx, jobPath(id, "/complete"), req, &ack)
	return ack, err
}

// JobOutputURL implements OutputURLSource.
func (c *JobClient) JobOutputURL(ctx context.Context, id, token, name string) (farmapi.OutputURLResponse, error) {
	var resp farmapi.OutputURLResponse
	err := c.call(ctx, jobPath(id, "/output-url"), farmapi.OutputURLRequest{Token: token, Name: name}, &resp)
	return resp, err
}

// FailJob implements JobSource.
func (c *JobClient) FailJob(ctx context.Context, id string, req farmapi.FailRequest) (farmapi.JobAck, error) {
	var ack farmapi.JobAck
	err := c.call(ctx, jobPath(id, "/fail"), req, &ack)
	return ack, err
}

// transfer sends a request whose body is streamed, or whose answer is.
func (c *JobClient) transfer(ctx context.Context, method, path, token string, body io.Reader) (*http.Response, string, error) {
	base, err := c.base()
	if err != nil {
		return nil, "", err
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return nil, base, err
	}
	req.Header = c.header.Clone()
	req.Header.Set(farmapi.LeaseHeader, token)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, base, c.mapErr(base, 0, fmt.Errorf("%s %s: %w", method, path, err))
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, base, c.mapErr(base, resp.StatusCode, fmt.Errorf("%s %s: %s", method, path, resp.Status))
	}
	return resp, base, nil
}

// OpenJobInput implements JobSource: the download streams.
func (c *JobClient) OpenJobInput(ctx context.Context, id, token string, index int) (io.ReadCloser, int64, error) {
	resp, _, err := c.transfer(ctx, http.MethodGet, jobPath(id, "/input/"+strconv.Itoa(index)), token, nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// PutJobOutput implements JobSource: the upload streams.
func (c *JobClient) PutJobOutput(ctx context.Context, id, token, name string, r io.Reader) (int64, error) {
	path := "/output/" + url.PathEscape(name)
	if file, ok := strings.CutPrefix(name, farmapi.ShatteredPrefix); ok {
		// A shattered output has a route of its own: an escaped slash
		// would not reach the output route.
		path = "/output/" + farmapi.ShatteredPrefix + url.PathEscape(file)
	}
	resp, _, err := c.transfer(ctx, http.MethodPut, jobPath(id, path), token, r)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out farmapi.JobOutput
	if err := jsonDecode(resp.Body, &out); err != nil {
		return 0, fmt.Errorf("%w: %w", farmapi.ErrJobsUnavailable, err)
	}
	return out.Size, nil
}

func jsonDecode(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(v)
}

var _ ModelFetcher = (*JobClient)(nil)

// FetchModel implements ModelFetcher: a streaming session's file from a
// manager (GET farmapi.PathItems/:id/files/:name, with the farm token), or
// from f.URL, a presigned URL, without it.
func (c *JobClient) FetchModel(ctx context.Context, f farmapi.ModelFile, w io.Writer) (int64, error) {
	var body io.ReadCloser
	if f.URL != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL, nil)
		if err != nil {
			return 0, errors.New("bad presigned URL")
		}
		resp, err := c.client.Do(req)
		if err != nil {
			var uerr *url.Error
			if errors.As(err, &uerr) {
				err = uerr.Err // the URL holds a signature: not in errors
			}
			return 0, fmt.Errorf("GET presigned URL: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return 0, fmt.Errorf("GET presigned URL: %s", resp.Status)
		}
		body = resp.Body
	} else {
		resp, _, err := c.transfer(ctx, http.MethodGet, ItemFilePath(f.Item, f.Source), "", nil)
		if err != nil {
			return 0, err
		}
		body = resp.Body
	}
	defer body.Close()
	return io.Copy(w, body)
}

// ItemFilePath is the manager's path of an item's output file.
func ItemFilePath(item, name string) string {
	return farmapi.PathItems + "/" + url.PathEscape(item) + farmapi.PathFiles + "/" + url.PathEscape(name)
}
