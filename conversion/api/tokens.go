package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/signedurl"
	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
	"github.com/drover-dev/drover/storage"
)

// Upload and download tokens: uploadToken answers a URL that takes one
// PUT of an item's file, downloadToken one that serves an output. With
// storage that presigns (S3) they are its URLs, and the bytes never pass
// through drover; on other storage (the data directory) they are drover's
// own signed URLs under DirectPath, served here. Either way they work
// with plain curl and expire after Tokens.TTL.

// DirectPath starts the paths of drover's own signed URLs: DirectPath and
// the file's storage key.
const DirectPath = "/api/direct/"

// DefaultTokenTTL is how long a token works when Tokens.TTL is 0.
const DefaultTokenTTL = 15 * time.Minute

// Tokens configure the upload and download tokens.
type Tokens struct {
	// Signer signs drover's own URLs, for storage that cannot presign.
	// Nil: tokens need presigning storage, and the others answer "Not
	// available for this storage type", as the original server does.
	Signer *signedurl.Signer
	// PublicURL is the base of drover's own URLs as clients reach drover
	// ("https://drover.example.com"); empty takes the request's host.
	PublicURL string
	// TrustForwarded takes the base from X-Forwarded-Proto and
	// X-Forwarded-Host when PublicURL is empty: set it only behind a proxy
	// that sets them.
	TrustForwarded bool
	// TTL is how long a token works; 0 for DefaultTokenTTL.
	TTL time.Duration
}

// ValidatePublicURL checks a Tokens.PublicURL: empty, or an absolute
// http or https URL without query or fragment.
func ValidatePublicURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" ||
		u.Fragment != "" || u.User != nil {
		return fmt.Errorf("public URL %q: want http(s)://host[:port][/path]", s)
	}
	return nil
}

func (a *API) mountTokens(g gin.IRouter) {
	g.GET("/uploadToken/:name", a.uploadToken)
	g.GET("/uploadToken/:name/:size", a.uploadToken)
	g.GET("/downloadToken/:id/:type", a.downloadToken)
}

// MountDirect adds the routes of drover's own signed URLs under
// DirectPath. Their signature is their credential: r should not ask for
// another.
func (a *API) MountDirect(r gin.IRouter) {
	r.PUT(DirectPath+"*key", bodylimit.OnTooLarge(tooLarge), a.directPut)
	r.GET(DirectPath+"*key", a.directGet)
}

// notAvailable is the original server's answer on storage that cannot
// presign.
const notAvailable = "Not available for this storage type"

// tokensAvailable answers the original's error, 501, when there is
// neither a presigner nor a signer.
func (a *API) tokensAvailable(c *gin.Context) (storage.Presigner, bool) {
	p, ok := a.svc.Presigner()
	if ok || a.opts.Tokens.Signer != nil {
		return p, true
	}
	c.AbortWithStatusJSON(http.StatusNotImplemented, gin.H{"ERROR": notAvailable})
	return nil, false
}

func (a *API) ttl() time.Duration { return cmp.Or(a.opts.Tokens.TTL, DefaultTokenTTL) }

// uploadToken: an item that awaits the file :name, at most :size bytes
// when given, and a URL to PUT it to. The item is UPLOADING until
// reconvert.
func (a *API) uploadToken(c *gin.Context) {
	ev := a.auditUpload(c, "upload_token")
	ev.name = c.Param("name")
	defer ev.log()
	ar, err := args(c)
	if err != nil {
		ev.fail(err)
		return
	}
	var size int64
	if s := c.Param("size"); s != "" {
		if size, err = strconv.ParseInt(s, 10, 64); err != nil || size < 0 {
			ev.fail(fmt.Errorf("%w: the size must be a number of bytes", conversion.ErrInvalid))
			return
		}
	}
	ev.size = size
	if ar.ItemID != "" {
		// The original added the file to that item; here a token makes an
		// item of its own, and upload with itemid adds files.
		ev.fail(fmt.Errorf("%w: uploadToken makes a new item: to add a file to item %s, use upload with its itemid", conversion.ErrInvalid, ar.ItemID))
		return
	}
	p, ok := a.tokensAvailable(c)
	if !ok {
		ev.err = errors.New(notAvailable)
		return
	}
	ctx := c.Request.Context()
	it, key, err := a.svc.BeginDirect(ctx, a.options(ar), c.Param("name"), size)
	if err != nil {
		ev.fail(err)
		return
	}
	ev.item = it.ID
	var token string
	if p != nil {
		token, err = p.PresignPut(ctx, key, a.ttl())
	} else {
		token = a.signedURL(c.Request, http.MethodPut, key, size)
	}
	if err != nil {
		a.svc.Abort(ctx, it.ID)
		ev.fail(err)
		return
	}
	// The item, never the token: whoever reads the log cannot upload.
	a.log.Info("upload token issued", "item", it.ID, "limit", size, "presigned", p != nil)
	a.tokenMetrics.issued.WithLabelValues("upload", via(p != nil)).Inc()
	c.JSON(http.StatusOK, gin.H{"token": token, "itemid": it.ID, "storageID": it.ID})
}

// downloadToken: a URL that GETs the item's output of type :type.
func (a *API) downloadToken(c *gin.Context) {
	p, ok := a.tokensAvailable(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	id := c.Param("id")
	key, _, err := a.svc.OutputKey(ctx, id, c.Param("type"))
	if err != nil {
		a.fail(c, err)
		return
	}
	var token string
	if p != nil {
		token, err = p.PresignGet(ctx, key, a.ttl())
	} else {
		token = a.signedURL(c.Request, http.MethodGet, key, 0)
	}
	if err != nil {
		a.fail(c, err)
		return
	}
	a.log.Info("download token issued", "item", id, "type", c.Param("type"), "presigned", p != nil)
	a.tokenMetrics.issued.WithLabelValues("download", via(p != nil)).Inc()
	c.JSON(http.StatusOK, gin.H{"token": token, "itemid": id, "storageID": id})
}

// signedURL is drover's own URL for method on key.
func (a *API) signedURL(r *http.Request, method, key string, limit int64) string {
	t := a.opts.Tokens
	p := DirectPath + key
	q := t.Signer.Query(signedurl.Grant{Method: method, Path: p, Expires: time.Now().Add(a.ttl()), Limit: limit})
	return a.base(r) + (&url.URL{Path: p}).EscapedPath() + "?" + q
}

// base is where clients reach drover: PublicURL, or the request's scheme
// and host (the forwarded ones if trusted).
func (a *API) base(r *http.Request) string {
	t := a.opts.Tokens
	if t.PublicURL != "" {
		return strings.TrimSuffix(t.PublicURL, "/")
	}
	scheme, host := "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if t.TrustForwarded {
		if p := firstValue(r.Header.Get("X-Forwarded-Proto")); p == "http" || p == "https" {
			scheme = p
		}
		if h := firstValue(r.Header.Get("X-Forwarded-Host")); plainHost(h) {
			host = h
		}
	}
	return scheme + "://" + host
}

// firstValue is the first of a proxy header's comma-separated values: the
// one the first proxy, next to the client, set.
func firstValue(v string) string {
	first, _, _ := strings.Cut(v, ",")
	return strings.TrimSpace(first)
}

// plainHost: a host[:port] with nothing that would change the URL around
// it.
func plainHost(h string) bool {
	return h != "" && len(h) <= 255 && !strings.ContainsFunc(h, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune("/?#@\\", r)
	})
}

// verify checks the signed URL of the request for method and returns its
// grant and the storage key it names. On failure it has answered: 403 for
// a URL that is expired, altered or used otherwise than signed.
func (a *API) verify(c *gin.Context, method string) (signedurl.Grant, string, bool) {
	s := a.opts.Tokens.Signer
	if s == nil {
		c.AbortWithStatusJSON(http.StatusNotFound, gin.H{"ERROR": notAvailable})
		return signedurl.Grant{}, "", false
	}
	p := c.Request.URL.Path
	key := strings.TrimPrefix(p, DirectPath)
	g, err := s.Verify(method, p, c.Request.URL.RawQuery)
	if err != nil {
		msg, reason := "The token is not valid: it was altered, or is used with another method or file.", "invalid"
		if errors.Is(err, signedurl.ErrExpired) {
			msg, reason = "The token has expired: ask for a new one.", "expired"
		}
		a.tokenMetrics.refused.WithLabelValues(reason).Inc()
		// The item, never the URL: its query is the token.
		a.log.Info("token refused", "item", keyItem(key), "method", method, "reason", err)
		c.AbortWithStatusJSON(http.StatusForbidden, gin.H{"ERROR": msg})
		return g, "", false
	}
	return g, key, true
}

// splitKey reads "items/<id>/<kind>/<name>", the keys tokens are made
// for.
func splitKey(key, kind string) (id, name string, ok bool) {
	parts := strings.Split(key, "/")
	if len(parts) != 4 || parts[0]+"/" != items.Prefix || parts[2] != kind || storage.ValidateKey(key) != nil ||
		items.ValidateID(parts[1]) != nil {
		return "", "", false
	}
	return parts[1], parts[3], true
}

// keyItem is the item id of a key, for the log, or "" for what is none.
func keyItem(key string) string {
	parts := strings.SplitN(key, "/", 3)
	if len(parts) < 2 || parts[0]+"/" != items.Prefix || items.ValidateID(parts[1]) != nil {
		return ""
	}
	return parts[1]
}

// directPut stores the body as the file an upload token was made for. A
// body above the token's limit is refused (413) and stores nothing: a
// declared length at once, a streamed one when it passes the limit.
func (a *API) directPut(c *gin.Context) {
	g, key, ok := a.verify(c, http.MethodPut)
	if !ok {
		return
	}
	id, stored, ok := splitKey(key, "original")
	if !ok {
		c.AbortWithStatusJSON(http.StatusNotFound, gin.H{"ERROR": "Not found"})
		return
	}
	ctx := withoutPrincipal(c)
	ev := a.auditUpload(c, "upload")
	ev.p, ev.via, ev.item = nil, "signed-url", id
	if it, err := a.svc.Get(ctx, id); err == nil {
		ev.tenant = conversion.TenantOf(it)
		if it.Awaiting != nil {
			ev.name = it.Awaiting.Name
		}
	}
	defer ev.log()
	if g.Limit > 0 && c.Request.ContentLength > g.Limit {
		ev.fail(fmt.Errorf("%w: the upload may hold %d bytes", conversion.ErrTooLarge, g.Limit))
		return
	}
	// The token's limit, checked again as the body streams; the service
	// bounds the upload by its own as well.
	if g.Limit > 0 {
		bodylimit.SetLimit(c, g.Limit)
	} else {
		bodylimit.SetLimit(c, a.svc.MaxUpload())
	}
	n, err := a.svc.PutAwaited(ctx, id, stored, ev.count(c.Request.Body))
	if err != nil {
		ev.fail(err)
		return
	}
	a.log.Info("direct upload stored", "item", id, "bytes", n)
	c.JSON(http.StatusOK, gin.H{"itemid": id, "storageID": id, "size": n})
}

// directGet serves the output a download token was made for.
func (a *API) directGet(c *gin.Context) {
	_, key, ok := a.verify(c, http.MethodGet)
	if !ok {
		return
	}
	id, name, ok := splitKey(key, "outputs")
	if !ok {
		c.AbortWithStatusJSON(http.StatusNotFound, gin.H{"ERROR": "Not found"})
		return
	}
	obj, f, err := a.svc.OpenOutputByName(withoutPrincipal(c), id, name)
	a.serve(c, obj, f, err)
}

// withoutPrincipal is the context of a request whose authority is not a
// principal: a signed URL, whose tenant was checked when it was issued,
// or a farm's token. Whatever principal the request carries does not
// count.
func withoutPrincipal(c *gin.Context) context.Context {
	return auth.NewContext(c.Request.Context(), nil)
}

// tokenMetrics count the tokens given out and refused.
type tokenMetrics struct {
	issued  *prometheus.CounterVec
	refused *prometheus.CounterVec
}

func newTokenMetrics(reg prometheus.Registerer) *tokenMetrics {
	m := &tokenMetrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_conversion_tokens_issued_total",
			Help: "Upload and download tokens given out, by kind (upload, download) and by who signed them (presigned: the storage, signed: drover).",
		}, []string{"kind", "via"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_conversion_tokens_refused_total",
			Help: "Requests with drover's own signed URLs refused, by reason (expired, invalid).",
		}, []string{"reason"}),
	}
	for _, r := range []string{"expired", "invalid"} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		m.issued = registerVec(reg, m.issued)
		m.refused = registerVec(reg, m.refused)
	}
	return m
}

// registerVec registers c, or returns the collector registered before
// under its name (an API built again on one registry).
func registerVec(reg prometheus.Registerer, c *prometheus.CounterVec) *prometheus.CounterVec {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if prev, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return prev
		}
	}
	return c
}

func via(presigned bool) string {
	if presigned {
		return "presigned"
	}
	return "signed"
}
