package farmapi

import (
	"errors"
	"net/http"
	"time"
)

// The conversion job API between farms and managers. Farms call it with
// "Authorization: Bearer <farm token>"; every call about a leased job also
// carries the lease's token, which names the attempt, in the LeaseHeader
// header or the body. Any manager serves any farm: a farm whose manager
// does not answer calls another with the same lease token.
//
// Farm → manager:
//
//	POST /api/v1/jobs/lease              LeaseRequest → LeaseResponse (a long poll)
//	POST /api/v1/jobs/:id/renew          RenewRequest → RenewResponse
//	GET  /api/v1/jobs/:id/input/:index   the input's bytes (LeaseHeader)
//	PUT  /api/v1/jobs/:id/output/:name   an output's bytes, streamed (LeaseHeader)
//	POST /api/v1/jobs/:id/output-url     OutputURLRequest → OutputURLResponse
//	PUT  /api/v1/jobs/:id/output/shattered/:name
//	                                     a shattered output's bytes: the output
//	                                     ShatteredPrefix+name (LeaseHeader)
//	POST /api/v1/jobs/:id/complete       CompleteRequest → JobAck
//	POST /api/v1/jobs/:id/fail           FailRequest → JobAck
//
// With storage that farms reach directly (S3), the lease carries a
// presigned GET URL for each input (JobInput.URL) and says OutputURLs: the
// farm asks output-url for a presigned PUT URL of each output and uploads
// it there, so that it moves the bytes without the manager and holds no
// storage credentials. Without them it uses input and output.
//
// A 409 answer (ErrLeaseLost) tells the farm that its attempt is over: the
// lease expired and the job went to another farm, or the item was deleted
// or reconverted. The farm stops the conversion and drops its results. A
// 503 (ErrJobsUnavailable) is worth trying again, at the same or another
// manager.
const (
	PathJobs     = "/api/v1/jobs"
	PathJobLease = PathJobs + "/lease"
	// LeaseHeader carries the lease token on input and output transfers.
	LeaseHeader = "Drover-Lease"
	// ShatteredPrefix starts the names of a shattered conversion's
	// outputs: its parts' GLBs and its index. The only outputs whose names
	// have a directory.
	ShatteredPrefix = "shattered/"
)

// Errors of the job API, mapped to and from HTTP status codes by JobStatus
// and JobError.
var (
	// ErrLeaseLost: the token does not hold the job's lease any more.
	ErrLeaseLost = errors.New("job lease lost")
	// ErrJobsUnavailable: the manager cannot reach its queue or storage,
	// or it is stopping. Try again.
	ErrJobsUnavailable = errors.New("jobs unavailable")
	// ErrBadJobRequest: the request is malformed (an output name that is
	// no file name, an output missing at completion).
	ErrBadJobRequest = errors.New("bad job request")
)

// JobStatus is the HTTP status the job API answers err with.
func JobStatus(err error) int {
	switch {
	case errors.Is(err, ErrLeaseLost):
		return http.StatusConflict
	case errors.Is(err, ErrBadJobRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrJobsUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// JobError is the sentinel a job API status stands for, or nil.
func JobError(code int) error {
	switch code {
	case http.StatusConflict, http.StatusNotFound:
		return ErrLeaseLost
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return ErrBadJobRequest
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return ErrJobsUnavailable
	}
	return nil
}

// MaxLeaseWait is the longest a lease call waits for a job.
const MaxLeaseWait = 30 * time.Second

// LeaseRequest asks for jobs: up to Max, waiting up to Wait for a first
// one.
type LeaseRequest struct {
	// Farm is the farm's id: the lease holder.
	Farm string `json:"farm"`
	// Max is how many jobs the farm takes now: its free job slots.
	Max int `json:"max"`
	// Slots is the farm's number of job slots, for /status.
	Slots int `json:"slots"`
	// WaitMS is how long to wait for a job when none is ready, in
	// milliseconds; at most MaxLeaseWait.
	WaitMS int64 `json:"wait_ms"`
}

// LeaseResponse hands out jobs; none when the wait passed without one.
type LeaseResponse struct {
	Jobs []JobLease `json:"jobs"`
}

// JobLease is one attempt at a conversion job, leased to a farm.
type JobLease struct {
	// ID names the job; Token the attempt. Both go back with every call.
	ID      string `json:"id"`
	Token   string `json:"token"`
	Attempt int    `json:"attempt"`
	// Expires is when the lease ends unless renewed; LeaseMS its length,
	// from which the farm paces its renewals.
	Expires time.Time `json:"expires"`
	LeaseMS int64     `json:"lease_ms"`
	// Item is the conversion item's id, Generation its conversion.
	Item       string `json:"item"`
	Generation int    `json:"generation"`
	// Name is the item's name: its extension says the format (".zip" for
	// an archive), and outputs are named after it.
	Name string `json:"name"`
	// StartPath names the model inside a ZIP.
	StartPath string `json:"start_path,omitempty"`
	// CommandLine is the user's conversionCommandLine.
	CommandLine []string `json:"command_line,omitempty"`
	// ProcessShattered asks for the shattered outputs too: a GLB per part
	// and the assembly's index, named ShatteredPrefix+file.
	ProcessShattered bool `json:"process_shattered,omitempty"`
	// Inputs are the uploaded files; the farm puts each in one directory
	// under its Name. Model is the Name of the one to convert; empty when
	// the farm must pick the only model among them.
	Inputs []JobInput `json:"inputs"`
	Model  string     `json:"model,omitempty"`
	// OutputURLs says that outputs go to storage directly, through URLs
	// that output-url presigns.
	OutputURLs bool `json:"output_urls,omitempty"`
}

// JobInput is one uploaded file of a job.
type JobInput struct {
	// Name is the file's name in the job's input directory: one path
	// element, chosen by the server (an upload's stored name) or the
	// uploaded name of a file of a multi-file upload.
	Name string `json:"name"`
	Size int64  `json:"size"`
	// LocalPath is the file's path on the manager's host when its storage
	// is a directory there. A farm that shares that directory (the local
	// farm of `drover up`, or one configured so) reads it in place instead
	// of downloading it.
	LocalPath string `json:"local_path,omitempty"`
	// URL is a short-lived presigned GET URL of the file in storage, when
	// farms reach the storage directly (S3). It needs no credentials; a
	// farm whose download from it fails uses the input route instead.
	URL string `json:"url,omitempty"`
	// Version names the file's content: the manager changes it whenever
	// the file changes (it is made of the stored object's size and
	// modification time), so that a farm's model cache keyed by item,
	// Name and Version never serves a replaced file. Empty: the farm
	// does not cache the file.
	Version string `json:"version,omitempty"`
}

// OutputURLRequest asks for a presigned PUT URL for output Name of the
// attempt that Token names.
type OutputURLRequest struct {
	Token string `json:"token"`
	Name  string `json:"name"`
}

// OutputURLResponse is a presigned PUT URL, valid until Expires. The farm
// PUTs the output's bytes there, with their Content-Length.
type OutputURLResponse struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// RenewRequest extends a lease.
type RenewRequest struct {
	Token string `json:"token"`
}

// RenewResponse says until when the lease holds.
type RenewResponse struct {
	Expires time.Time `json:"expires"`
}

// JobOutput is an output the farm uploaded.
type JobOutput struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Size int64  `json:"size"`
}

// CompleteRequest ends an attempt successfully, once its outputs are
// uploaded.
type CompleteRequest struct {
	Token   string      `json:"token"`
	Attempt int         `json:"attempt"`
	Outputs []JobOutput `json:"outputs"`
}

// FailRequest ends an attempt that failed.
type FailRequest struct {
	Token string `json:"token"`
	// Reason is the HOOPS reason the item's state shows when the job
	// ends: "Conversion Error", "Specify startPath with ZIP", "Unzip
	// Error". Detail is the short detailedError.
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
	// Final ends the job now: the input cannot convert, and another
	// attempt would fail the same way.
	Final bool `json:"final,omitempty"`
}

// JobAck answers complete and fail: the job's state after the call
// (done, failed, delayed for a retry).
type JobAck struct {
	State string `json:"state"`
}

// JobFarm is a farm as the job API knows it: from its lease calls.
type JobFarm struct {
	ID       string    `json:"id"`
	Slots    int       `json:"job_slots"`
	Free     int       `json:"free_job_slots"`
	LastSeen time.Time `json:"last_seen"`
}
