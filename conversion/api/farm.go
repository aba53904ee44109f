package api

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
)

// MountFarm adds the farm job API (farmapi.PathJobs) behind auth, the
// manager's farm-token check.
func (a *API) MountFarm(r gin.IRouter, auth gin.HandlerFunc) {
	g := r.Group(farmapi.PathJobs, auth, bodylimit.OnTooLarge(jobTooLarge))
	g.POST("/lease", a.lease)
	g.POST("/:id/renew", a.renew)
	g.GET("/:id/input/:index", a.input)
	g.PUT("/:id/output/:name", a.output)
	g.POST("/:id/output-url", a.outputURL)
	g.PUT("/:id/output/shattered/:name", a.output)
	g.POST("/:id/complete", a.complete)
	g.POST("/:id/fail", a.failJob)
	// Streaming sessions' files, which farms fetch into session directories.
	r.Group(farmapi.PathItems, auth).GET("/:id"+farmapi.PathFiles+"/:name", a.itemFile)
}

// itemFile serves a farm an item's output file.
func (a *API) itemFile(c *gin.Context) {
	obj, f, err := a.svc.OpenOutputByName(withoutPrincipal(c), c.Param("id"), c.Param("name"))
	if err != nil {
		code := http.StatusInternalServerError
		switch {
		case errors.Is(err, conversion.ErrNotFound):
			code = http.StatusNotFound
		case errors.Is(err, conversion.ErrUnavailable):
			code = http.StatusServiceUnavailable
		default:
			a.log.Error("farm item file", "err", err)
		}
		c.AbortWithStatusJSON(code, gin.H{"message": http.StatusText(code)})
		return
	}
	defer obj.Close()
	c.Header("Content-Type", "application/octet-stream")
	c.Header("Content-Length", strconv.FormatInt(f.Size, 10))
	c.Status(http.StatusOK)
	_, _ = io.Copy(c.Writer, obj)
}

// jobFail answers a farm with the status its error stands for.
func (a *API) jobFail(c *gin.Context, err error) {
	code := farmapi.JobStatus(err)
	if code == http.StatusInternalServerError && c.Request.Context().Err() != nil {
		// The farm gave up (a long poll of a farm that stops): nobody
		// reads the answer, and nothing failed here.
		err = errors.Join(farmapi.ErrJobsUnavailable, err)
		code = http.StatusServiceUnavailable
	}
	if code == http.StatusInternalServerError {
		a.log.Error("farm job api", "path", c.FullPath(), "err", err)
	}
	msg := "internal error"
	switch {
	case errors.Is(err, farmapi.ErrLeaseLost):
		msg = "the job's lease is lost"
	case errors.Is(err, farmapi.ErrBadJobRequest):
		msg = "bad job request"
	case errors.Is(err, farmapi.ErrJobsUnavailable):
		msg = "jobs are unavailable; try again"
	}
	if code != http.StatusInternalServerError {
		a.log.Info("farm job api", "path", c.FullPath(), "status", code, "err", err)
	}
	c.AbortWithStatusJSON(code, gin.H{"message": msg})
}

// jobTooLarge answers a job API body over its bound.
func jobTooLarge(c *gin.Context, _ int64) {
	c.JSON(http.StatusRequestEntityTooLarge, gin.H{"message": "the body is larger than the job API accepts"})
}

func (a *API) bind(c *gin.Context, v any) bool {
	bodylimit.SetLimit(c, 1<<20)
	if err := c.ShouldBindJSON(v); err != nil {
		a.jobFail(c, errors.Join(farmapi.ErrBadJobRequest, err))
		return false
	}
	return true
}

func (a *API) lease(c *gin.Context) {
	var req farmapi.LeaseRequest
	if !a.bind(c, &req) {
		return
	}
	jobs, err := a.svc.LeaseJobs(c.Request.Context(), req)
	if err != nil {
		a.jobFail(c, err)
		return
	}
	if jobs == nil {
		jobs = []farmapi.JobLease{}
	}
	c.JSON(http.StatusOK, farmapi.LeaseResponse{Jobs: jobs})
}

func (a *API) renew(c *gin.Context) {
	var req farmapi.RenewRequest
	if !a.bind(c, &req) {
		return
	}
	t, err := a.svc.RenewJob(c.Request.Context(), c.Param("id"), req.Token)
	if err != nil {
		a.jobFail(c, err)
		return
	}
	c.JSON(http.StatusOK, farmapi.RenewResponse{Expires: t})
}

func (a *API) input(c *gin.Context) {
	index, err := strconv.Atoi(c.Param("index"))
	if err != nil {
		a.jobFail(c, farmapi.ErrBadJobRequest)
		return
	}
	rc, size, err := a.svc.OpenJobInput(c.Request.Context(), c.Param("id"), c.GetHeader(farmapi.LeaseHeader), index)
	if err != nil {
		a.jobFail(c, err)
		return
	}
	defer rc.Close()
	c.Header("Content-Type", "application/octet-stream")
	c.Header("Content-Length", strconv.FormatInt(size, 10))
	c.Status(http.StatusOK)
	_, _ = io.Copy(c.Writer, rc)
}

func (a *API) output(c *gin.Context) {
	bodylimit.SetLimit(c, a.svc.MaxUpload())
	name := c.Param("name")
	if strings.HasSuffix(c.FullPath(), "/output/shattered/:name") {
		name = farmapi.ShatteredPrefix + name
	}
	n, err := a.svc.PutJobOutput(c.Request.Context(), c.Param("id"), c.GetHeader(farmapi.LeaseHeader), name,
		c.Request.Body)
	if err != nil {
		if isMaxBytes(err) {
			err = errors.Join(farmapi.ErrBadJobRequest, err)
		}
		a.jobFail(c, err)
		return
	}
	c.JSON(http.StatusOK, farmapi.JobOutput{Name: name, Size: n})
}

func (a *API) outputURL(c *gin.Context) {
	var req farmapi.OutputURLRequest
	if !a.bind(c, &req) {
		return
	}
	resp, err := a.svc.JobOutputURL(c.Request.Context(), c.Param("id"), req.Token, req.Name)
	if err != nil {
		a.jobFail(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

func (a *API) complete(c *gin.Context) {
	var req farmapi.CompleteRequest
	if !a.bind(c, &req) {
		return
	}
	ack, err := a.svc.CompleteJob(c.Request.Context(), c.Param("id"), req)
	if err != nil {
		a.jobFail(c, err)
		return
	}
	c.JSON(http.StatusOK, ack)
}

func (a *API) failJob(c *gin.Context) {
	var req farmapi.FailRequest
	if !a.bind(c, &req) {
		return
	}
	ack, err := a.svc.FailJob(c.Request.Context(), c.Param("id"), req)
	if err != nil {
		a.jobFail(c, err)
		return
	}
	c.JSON(http.StatusOK, ack)
}
