package api

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/conversion"
)

// UploadLimiter bounds how fast callers start uploads: upload,
// uploadArray, create, reconvert and uploadToken. user is the caller's
// principal (its tenant and user), or "ip:" and its address without one;
// ip is its address. limits.Limits is one.
type UploadLimiter interface {
	AllowUpload(user, ip string) (allowed bool, retryAfter time.Duration)
}

// uploadRoutes are the routes that start an upload, below each prefix,
// and the event their audit line names.
var uploadRoutes = map[string]string{
	"/upload": "upload", "/uploadArray": "upload", "/create": "create", "/reconvert/:id": "reconvert",
	"/uploadToken/:name": "upload_token", "/uploadToken/:name/:size": "upload_token",
}

// limitUploads answers an upload past Options.Uploads' rate with 429, a
// Retry-After and the API's {"ERROR": …}, before its body is read, and
// writes its audit line. Other routes pass.
func (a *API) limitUploads(c *gin.Context) {
	if a.opts.Uploads == nil {
		return
	}
	event := uploadEvent(c.FullPath())
	if event == "" {
		return
	}
	ip := c.ClientIP()
	user := "ip:" + ip
	if p := auth.FromContext(c.Request.Context()); p != nil && p.User != "" {
		user = "p:" + p.Tenant + "\x00" + p.User
	}
	ok, wait := a.opts.Uploads.AllowUpload(user, ip)
	if ok {
		return
	}
	secs := max(1, int(math.Ceil(wait.Seconds())))
	c.Header("Retry-After", strconv.Itoa(secs))
	// ErrQuota answers 429 with the words after it.
	ev := a.auditUpload(c, event)
	ev.fail(fmt.Errorf("%w: too many uploads; try again in %d %s", conversion.ErrQuota, secs, plural(secs, "second")))
	ev.log()
}

// uploadEvent is the audit event of an upload route; "" for other routes.
func uploadEvent(full string) string {
	for _, p := range Prefixes {
		if r, ok := strings.CutPrefix(full, p); ok && uploadRoutes[r] != "" {
			return uploadRoutes[r]
		}
	}
	return ""
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
