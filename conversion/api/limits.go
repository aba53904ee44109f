package api

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/auth"
)

// UploadLimiter bounds how fast callers start uploads: upload,
// uploadArray, create, reconvert and uploadToken. user is the caller's
// principal (its tenant and user), or "ip:" and its address without one;
// ip is its address. limits.Limits is one.
type UploadLimiter interface {
	AllowUpload(user, ip string) (allowed bool, retryAfter time.Duration)
}

// uploadRoutes are the routes that start an upload, below each prefix.
var uploadRoutes = map[string]bool{
	"/upload": true, "/uploadArray": true, "/create": true, "/reconvert/:id": true,
	"/uploadToken/:name": true, "/uploadToken/:name/:size": true,
}

// limitUploads answers an upload past Options.Uploads' rate with 429, a
// Retry-After and the API's {"ERROR": …}, before its body is read. Other
// routes pass.
func (a *API) limitUploads(c *gin.Context) {
	if a.opts.Uploads == nil || !isUploadRoute(c.FullPath()) {
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
	a.log.Info("upload refused", "code", "rate_limited", "path", c.FullPath(), "remote", ip)
	c.Header("Retry-After", strconv.Itoa(secs))
	c.AbortWithStatusJSON(http.StatusTooManyRequests,
		gin.H{"ERROR": "too many uploads; try again in " + strconv.Itoa(secs) + " " + plural(secs, "second")})
}

func isUploadRoute(full string) bool {
	for _, p := range Prefixes {
		if r, ok := strings.CutPrefix(full, p); ok && uploadRoutes[r] {
			return true
		}
	}
	return false
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
