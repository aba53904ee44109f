// Package api is the HTTP edge of the conversion service: the HOOPS
// Communicator conversion server's REST API, under /api and under
// /caas_api (the prefix of hc-caas clients), with its arguments in the
// CS-API-Arg header and its errors as {"ERROR": "…"}; and the farm job API
// (farmapi's paths), over which farms lease, renew, download, upload and
// acknowledge jobs.
//
// It owns routes, argument parsing, multipart streaming and the JSON the
// original's clients read. What the calls do is the conversion.Service's;
// authentication of farms is the caller's gin middleware.
package api

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
	"github.com/drover-dev/drover/storage"
)

// Prefixes are where the REST API is served: /api for the HOOPS
// conversion server's clients, /caas_api for hc-caas's.
var Prefixes = []string{"/api", "/caas_api"}

// Options configure the API.
type Options struct {
	// Version is what info answers.
	Version string
	// Tokens configure uploadToken and downloadToken.
	Tokens Tokens
	// WaitTimeout bounds waitUntilConversionDone; default 10 min.
	WaitTimeout time.Duration
	Logger      *slog.Logger
	// Audit receives one line per upload, upload token and delete (see
	// auditEvent); nil takes Logger with component "audit".
	Audit *slog.Logger
	// Registerer receives the API's metrics; nil means none.
	Registerer prometheus.Registerer
	// Uploads, when set, bounds how fast each caller starts uploads.
	Uploads UploadLimiter
}

// API serves a conversion.Service over HTTP.
type API struct {
	svc          *conversion.Service
	opts         Options
	log          *slog.Logger
	auditLog     *slog.Logger
	tokenMetrics *tokenMetrics
}

// New returns the API of svc.
func New(svc *conversion.Service, opts Options) *API {
	opts.Version = cmp.Or(opts.Version, "dev")
	opts.WaitTimeout = cmp.Or(opts.WaitTimeout, 10*time.Minute)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Audit == nil {
		opts.Audit = opts.Logger.With("component", "audit")
	}
	return &API{svc: svc, opts: opts, log: opts.Logger, auditLog: opts.Audit, tokenMetrics: newTokenMetrics(opts.Registerer)}
}

// Mount adds the REST API's routes under each of Prefixes, and those of
// drover's own signed URLs under DirectPath: MountRoutes and MountDirect.
func (a *API) Mount(r gin.IRouter) {
	a.MountRoutes(r)
	a.MountDirect(r)
}

// MountRoutes adds the REST API's routes under each of Prefixes; r may
// be a group behind an authentication middleware.
func (a *API) MountRoutes(r gin.IRouter) {
	for _, p := range Prefixes {
		g := r.Group(p, bodylimit.OnTooLarge(tooLarge))
		g.Use(a.limitUploads)
		g.POST("/upload", a.upload)
		g.POST("/uploadArray", a.uploadArray)
		g.PUT("/create", a.create)
		g.PUT("/reconvert/:id", a.reconvert)
		g.PUT("/delete/:id", a.delete)
		g.GET("/data", a.dataMany)
		g.GET("/data/:id", a.data)
		g.GET("/items", a.items)
		g.GET("/updated", a.updated)
		g.GET("/file/:id/:type", a.file)
		g.GET("/fileByName/:id/:name", a.fileByName)
		g.GET("/original/:id", a.original)
		// A catch-all, so that a name with a slash reaches the handler and
		// is refused with the API's error, not a bare 404.
		g.GET("/shattered/:id/*name", a.shattered)
		g.GET("/shatteredXML/:id", a.shatteredXML)
		g.GET("/info", a.info)
		a.mountTokens(g)
	}
}

// fail answers {"ERROR": msg} with the status that fits err.
func (a *API) fail(c *gin.Context, err error) {
	status, msg := a.answer(err)
	switch {
	case msg == internalError:
		a.log.Error("conversion api", "path", c.FullPath(), "err", err)
	case status == http.StatusBadRequest:
		a.log.Info("conversion api: bad request", "path", c.FullPath(), "err", err)
	}
	c.AbortWithStatusJSON(status, gin.H{"ERROR": msg})
}

// answer is the status and the sentence that answer err. The sentence
// never holds what the client should not see (a Go error chain, an
// address): unexpected errors are answered internalError.
func (a *API) answer(err error) (int, string) {
	status, msg := http.StatusInternalServerError, internalError
	switch {
	case errors.Is(err, conversion.ErrReadOnly):
		status, msg = http.StatusForbidden, conversion.ErrReadOnly.Error()
	case errors.Is(err, conversion.ErrQuota):
		status, msg = http.StatusTooManyRequests, strings.TrimPrefix(err.Error(), conversion.ErrQuota.Error()+": ")
	case errors.Is(err, ErrBadArg), errors.Is(err, conversion.ErrInvalid):
		status, msg = http.StatusBadRequest, clientMessage(err)
	case errors.Is(err, conversion.ErrNotFound):
		status, msg = http.StatusNotFound, "Item not found"
		if !errors.Is(err, items.ErrNotFound) {
			msg = "Not found: " + clientMessage(err)
		}
	case errors.Is(err, conversion.ErrTooLarge), isMaxBytes(err):
		status, msg = http.StatusRequestEntityTooLarge, "the upload is larger than the server allows"
	case errors.Is(err, conversion.ErrNotAwaited):
		status, msg = http.StatusConflict, "The item does not take this upload: it was converted or deleted."
	case errors.Is(err, conversion.ErrUnavailable):
		status, msg = http.StatusServiceUnavailable, "the conversion service is unavailable, try again"
	case errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusGatewayTimeout, "the conversion did not end in time"
	}
	return status, msg
}

// Sentences for the webhook URLs the policy refuses. They name no host:
// the check may have resolved it, and the body is no place for addresses.
const (
	msgWebhookNotAllowed = "The webhook URL is not allowed. Webhooks reach public hosts only, " +
		"unless the host is on the server's webhook allow-list."
	msgWebhookInvalid = "The webhook URL is not valid. It must be an http or https URL with a host and no credentials."
)

// clientMessage is what a client reads of its request's error: the
// sentence the service wrote for clients after its sentinel's prefix
// ("conversion: invalid request: "), or a fixed one for a refused webhook
// URL. Errors from below the service never get here: they are 500s.
func clientMessage(err error) string {
	switch {
	case errors.Is(err, webhook.ErrNotAllowed):
		return msgWebhookNotAllowed
	case errors.Is(err, webhook.ErrInvalidURL):
		return msgWebhookInvalid
	}
	msg := err.Error()
	for _, sentinel := range []error{conversion.ErrInvalid, conversion.ErrNotFound, items.ErrInvalid} {
		msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
	}
	if rest, ok := strings.CutPrefix(msg, ErrBadArg.Error()+": "); ok {
		msg = "Bad " + ArgHeader + " header (" + rest + ")"
	}
	// What is left is one sentence, its parts joined with commas rather
	// than in the colons of an error chain.
	return strings.ReplaceAll(msg, ": ", ", ")
}

// internalError answers what the client cannot be told.
const internalError = "internal error"

func isMaxBytes(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func args(c *gin.Context) (Args, error) { return ParseArgs(c.GetHeader(ArgHeader)) }

// idReply is what upload, uploadArray, create and reconvert answer.
type idReply struct {
	ItemID    string `json:"itemid"`
	StorageID string `json:"storageID"`
	// ConversionState is the item's state when the call answers: PENDING,
	// or the end with waitUntilConversionDone.
	ConversionState string `json:"conversionState,omitempty"`
	DetailedError   string `json:"detailedError,omitempty"`
}

func reply(it items.Item) idReply {
	return idReply{ItemID: it.ID, StorageID: it.ID, ConversionState: string(it.State), DetailedError: it.DetailedError}
}

// bodyLimit bounds a request body: the uploads and the multipart framing.
// Every other route's body has the manager's small default bound.
func (a *API) bodyLimit(c *gin.Context) {
	bodylimit.SetLimit(c, a.svc.MaxUpload()+16<<20)
}

// tooLarge answers a body over its bound in the original's format.
func tooLarge(c *gin.Context, _ int64) {
	c.JSON(http.StatusRequestEntityTooLarge, gin.H{"ERROR": "the upload is larger than the server allows"})
}

// nextFile returns the next file part of the form field, or io.EOF. Other
// parts are skipped.
func nextFile(c *gin.Context, field string) (name string, r io.Reader, err error) {
	var mr *multipart.Reader
	if v, ok := c.Get(multipartKey); ok {
		mr = v.(*multipart.Reader)
	} else {
		if mr, err = c.Request.MultipartReader(); err != nil {
			return "", nil, fmt.Errorf("%w: the body must be multipart/form-data with a %q file", conversion.ErrInvalid, field)
		}
		c.Set(multipartKey, mr)
	}
	for {
		p, err := mr.NextPart()
		if err != nil {
			return "", nil, err
		}
		if p.FormName() == field && p.FileName() != "" {
			return p.FileName(), p, nil
		}
	}
}

const multipartKey = "drover.multipart"

func (a *API) wait(c *gin.Context, it items.Item, want bool) (items.Item, error) {
	if !want {
		return it, nil
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), a.opts.WaitTimeout)
	defer cancel()
	return a.svc.Wait(ctx, it.ID)
}

func (a *API) options(ar Args) conversion.Options {
	return conversion.Options{StartPath: ar.StartPath, Webhook: ar.Webhook, CommandLine: ar.CommandLine,
		ProcessShattered: ar.ProcessShattered, SkipConversion: ar.SkipConversion}
}

// upload: one file in field "file". With itemid (or storageID) the file
// joins that item's files, unconverted.
func (a *API) upload(c *gin.Context) {
	up := a.auditUpload(c, "upload")
	defer up.log()
	ar, err := args(c)
	if err != nil {
		up.fail(err)
		return
	}
	a.bodyLimit(c)
	name, r, err := nextFile(c, "file")
	if err != nil {
		up.fail(a.noFile(err, "file"))
		return
	}
	up.name = name
	r = up.count(r)
	ctx := c.Request.Context()
	if ar.ItemID != "" {
		up.item = ar.ItemID
		if _, err := a.svc.AddFile(ctx, ar.ItemID, name, r); err != nil {
			up.fail(err)
			return
		}
		it, err := a.svc.Get(ctx, ar.ItemID)
		if err != nil {
			up.fail(err)
			return
		}
		c.JSON(http.StatusOK, reply(it))
		return
	}
	it, err := a.svc.Upload(ctx, a.options(ar), name, r)
	if err != nil {
		up.fail(err)
		return
	}
	up.item = it.ID
	if it, err = a.wait(c, it, ar.WaitUntilConversionDone); err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, reply(it))
}

func (a *API) noFile(err error, field string) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: no file in field %q", conversion.ErrInvalid, field)
	}
	if isMaxBytes(err) || errors.Is(err, conversion.ErrInvalid) || errors.Is(err, conversion.ErrQuota) ||
		errors.Is(err, conversion.ErrReadOnly) || errors.Is(err, conversion.ErrNotFound) {
		return err
	}
	// The reader's own error (a multipart or network one) is no sentence
	// for the client: it goes to the log.
	a.log.Info("conversion api: unreadable upload", "err", err)
	return fmt.Errorf("%w: the upload could not be read as multipart/form-data", conversion.ErrInvalid)
}

// uploadArray: several files in field "files"; rootFile names the model.
func (a *API) uploadArray(c *gin.Context) {
	up := a.auditUpload(c, "upload")
	defer up.log()
	ar, err := args(c)
	if err != nil {
		up.fail(err)
		return
	}
	a.bodyLimit(c)
	o := a.options(ar)
	o.StartPath = cmp.Or(ar.RootFile, ar.StartPath)
	o.Name = path.Base(o.StartPath)
	if o.StartPath == "" {
		o.Name = ""
	}
	up.name = o.Name
	ctx := c.Request.Context()
	it, err := a.svc.Begin(ctx, o)
	if err != nil {
		up.fail(err)
		return
	}
	up.item = it.ID
	n := 0
	for {
		name, r, err := nextFile(c, "files")
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			up.name = cmp.Or(up.name, name)
			_, err = a.svc.AddFile(ctx, it.ID, name, up.count(r))
		}
		if err != nil {
			a.svc.Abort(ctx, it.ID)
			up.fail(a.noFile(err, "files"))
			return
		}
		n++
	}
	if n == 0 {
		a.svc.Abort(ctx, it.ID)
		up.fail(a.noFile(io.EOF, "files"))
		return
	}
	if it, err = a.svc.Commit(ctx, it.ID, o.SkipConversion); err != nil {
		a.svc.Abort(ctx, it.ID)
		up.fail(err)
		return
	}
	if it, err = a.wait(c, it, ar.WaitUntilConversionDone); err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, reply(it))
}

// create: an empty item, to add files to (upload with its itemid).
func (a *API) create(c *gin.Context) {
	ar, err := args(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	o := a.options(ar)
	o.Name = ar.ItemName
	it, err := a.svc.Create(c.Request.Context(), o)
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, reply(it))
}

func (a *API) reconvert(c *gin.Context) {
	ar, err := args(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	var r conversion.Reconversion
	if ar.Has["startPath"] {
		r.StartPath = &ar.StartPath
	}
	if ar.Has["conversionCommandLine"] {
		r.CommandLine = ar.CommandLine
	}
	if ar.Has["processShattered"] {
		r.ProcessShattered = &ar.ProcessShattered
	}
	it, err := a.svc.Reconvert(c.Request.Context(), c.Param("id"), r)
	if err != nil {
		a.fail(c, err)
		return
	}
	if it, err = a.wait(c, it, ar.WaitUntilConversionDone); err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, reply(it))
}

// delete answers truthfully: 404 for an item that is not there.
func (a *API) delete(c *gin.Context) {
	id := c.Param("id")
	ev := a.auditUpload(c, "delete")
	ev.item = id
	defer ev.log()
	if err := a.svc.Delete(c.Request.Context(), id); err != nil {
		ev.fail(err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"itemid": id, "storageID": id, "deleted": true})
}

func (a *API) data(c *gin.Context) {
	it, err := a.svc.Get(c.Request.Context(), c.Param("id"))
	if err != nil {
		a.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, View(it))
}

// dataMany answers data for the items of the itemids argument.
func (a *API) dataMany(c *gin.Context) {
	ar, err := args(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	out := []ItemView{}
	for _, id := range ar.ItemIDs {
		it, err := a.svc.Get(c.Request.Context(), id)
		if errors.Is(err, conversion.ErrNotFound) {
			continue
		}
		if err != nil {
			a.fail(c, err)
			return
		}
		out = append(out, View(it))
	}
	c.JSON(http.StatusOK, out)
}

func (a *API) items(c *gin.Context) {
	all, err := a.svc.List(c.Request.Context())
	if err != nil {
		a.fail(c, err)
		return
	}
	out := make([]ItemView, 0, len(all))
	for _, it := range all {
		out = append(out, View(it))
	}
	c.JSON(http.StatusOK, gin.H{"itemarray": out})
}

func (a *API) updated(c *gin.Context) {
	t, err := a.svc.LastUpdated(c.Request.Context())
	if err != nil {
		a.fail(c, err)
		return
	}
	if t.IsZero() {
		t = time.Unix(0, 0)
	}
	c.JSON(http.StatusOK, gin.H{"lastUpdated": iso(t)})
}

func (a *API) file(c *gin.Context) {
	obj, f, err := a.svc.OpenOutput(c.Request.Context(), c.Param("id"), c.Param("type"))
	a.serve(c, obj, f, err)
}

func (a *API) fileByName(c *gin.Context) {
	obj, f, err := a.svc.OpenOutputByName(c.Request.Context(), c.Param("id"), c.Param("name"))
	a.serve(c, obj, f, err)
}

func (a *API) original(c *gin.Context) {
	obj, f, err := a.svc.OpenOriginal(c.Request.Context(), c.Param("id"))
	a.serve(c, obj, f, err)
}

func (a *API) serve(c *gin.Context, obj storage.Object, f items.File, err error) {
	if err != nil {
		a.fail(c, err)
		return
	}
	defer obj.Close()
	h := c.Writer.Header()
	ct := mime.TypeByExtension(path.Ext(f.Name))
	switch path.Ext(f.Name) {
	case ".glb":
		ct = "model/gltf-binary"
	case ".stl":
		ct = "model/stl"
	}
	h.Set("Content-Type", cmp.Or(ct, "application/octet-stream"))
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": f.Name}))
	http.ServeContent(c.Writer, c.Request, f.Name, obj.Info().ModTime, obj)
}

func (a *API) info(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"version": a.opts.Version, "server": "drover"})
}

// iso formats a time as JavaScript's Date.toISOString does.
func iso(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// ItemView is an item as data and items show it: the original server's
// fields (files are the outputs' names), and drover's additions.
type ItemView struct {
	StorageID             string   `json:"storageID"`
	Name                  string   `json:"name"`
	StartPath             string   `json:"startPath,omitempty"`
	ConversionState       string   `json:"conversionState"`
	DetailedError         string   `json:"detailedError,omitempty"`
	Updated               string   `json:"updated"`
	Created               string   `json:"created"`
	Webhook               string   `json:"webhook,omitempty"`
	ConversionCommandLine []string `json:"conversionCommandLine,omitempty"`
	ProcessShattered      bool     `json:"processShattered,omitempty"`
	Files                 []string `json:"files"`
	// Outputs describe Files; Originals the uploaded files.
	Outputs []items.File `json:"outputs"`
	// Shattered are the shattered parts' GLBs and the index, index.xml:
	// shattered/:id/:name serves each.
	Shattered       []items.File    `json:"shattered,omitempty"`
	Originals       []OriginalView  `json:"originals"`
	Attempts        int             `json:"attempts"`
	Generation      int             `json:"generation"`
	WebhookDelivery *items.Delivery `json:"webhookDelivery,omitempty"`
}

// OriginalView is an uploaded file; where it is stored is the server's.
type OriginalView struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// View is an item as the API shows it.
func View(it items.Item) ItemView {
	v := ItemView{StorageID: it.ID, Name: it.Name, StartPath: it.StartPath, ConversionState: string(it.State),
		DetailedError: it.DetailedError, Updated: iso(it.Updated), Created: iso(it.Created), Webhook: it.Webhook,
		ConversionCommandLine: it.CommandLine, ProcessShattered: it.ProcessShattered, Files: []string{},
		Outputs: []items.File{}, Originals: []OriginalView{}, Attempts: it.Attempts, Generation: it.Generation,
		WebhookDelivery: it.Delivery, Shattered: it.Shattered}
	for _, f := range it.Files {
		v.Files = append(v.Files, f.Name)
		v.Outputs = append(v.Outputs, f)
	}
	for _, o := range it.Originals {
		v.Originals = append(v.Originals, OriginalView{Name: o.Name, Size: o.Size})
	}
	return v
}
