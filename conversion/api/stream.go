package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/farmapi"
)

// Streaming sessions (the original's streamingSession and
// enableStreamAccess): a session of the configured stream pool is placed
// by a Streamer, and items' converted files are put into its model
// directory, where the stream instance (the HOOPS SC server, or drover's
// reference viewer) finds them by the item's name.

// Streamer opens streaming sessions and gives them files. Package drover
// implements it over the manager.
type Streamer interface {
	// OpenStream places a session on a stream instance and returns its
	// key, the viewer's ?token=. ErrNoStreamSlot: every slot is busy.
	OpenStream(ctx context.Context, r *http.Request, renderType string) (string, error)
	// AddStreamFiles puts files into the session's model directory.
	// ErrNoStreamSession: no such session.
	AddStreamFiles(ctx context.Context, key string, files []farmapi.ModelFile) error
	// EndStream ends a session that could not be given its files.
	EndStream(key string)
}

// Errors a Streamer answers with.
var (
	ErrNoStreamSlot    = errors.New("no free streaming slot")
	ErrNoStreamSession = errors.New("no such streaming session")
	ErrNoStreamServer  = errors.New("no streaming server available")
	// errBadAccess: the items or itemnames header cannot be read.
	errBadAccess = errors.New("invalid stream access items")
)

// presignTTL is how long a presigned URL handed to a farm lasts.
const presignTTL = 15 * time.Minute

// maxAccessItems bounds the items of one enableStreamAccess.
const maxAccessItems = 256

// MountStream adds streamingSession and enableStreamAccess under each of
// Prefixes, served by st.
func (a *API) MountStream(r gin.IRouter, st Streamer) {
	for _, p := range Prefixes {
		g := r.Group(p)
		g.GET("/streamingSession", func(c *gin.Context) { a.streamingSession(c, st) })
		g.PUT("/enableStreamAccess/:sessionid", func(c *gin.Context) { a.enableStreamAccess(c, st) })
	}
}

// streamReply is streamingSession's answer: the viewer opens
// ws://serverurl:port?token=sessionid.
type streamReply struct {
	ServerURL  string `json:"serverurl"`
	Port       int    `json:"port"`
	SessionID  string `json:"sessionid"`
	RenderType string `json:"renderType"`
}

func (a *API) streamFail(c *gin.Context, err error) {
	switch {
	case errors.Is(err, ErrNoStreamSlot):
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{"ERROR": "No free streaming slot"})
	case errors.Is(err, ErrNoStreamServer):
		c.AbortWithStatusJSON(http.StatusServiceUnavailable, gin.H{"ERROR": "No streaming server available"})
	case errors.Is(err, ErrNoStreamSession):
		c.AbortWithStatusJSON(http.StatusNotFound, gin.H{"ERROR": "No session found"})
	case errors.Is(err, errBadAccess):
		c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"ERROR": "Invalid Stream Access Tokens"})
	case errors.Is(err, farmapi.ErrModelFetch), errors.Is(err, farmapi.ErrBadModel), errors.Is(err, farmapi.ErrNotFound):
		a.log.Warn("stream access", "err", err)
		c.AbortWithStatusJSON(http.StatusBadGateway, gin.H{"ERROR": "The model files could not be given to the streaming session"})
	default:
		a.fail(c, err)
	}
}

func (a *API) streamingSession(c *gin.Context, st Streamer) {
	ar, err := args(c)
	if err != nil {
		a.fail(c, err)
		return
	}
	renderType := ar.RenderType
	if renderType == "" {
		renderType = "client"
	}
	ctx := c.Request.Context()
	// The items are looked up first: a bad one costs no instance.
	var files []farmapi.ModelFile
	if len(ar.AccessItems) > 0 {
		if files, err = a.streamFiles(ctx, ar.AccessItems, false); err != nil {
			a.streamFail(c, err)
			return
		}
	}
	key, err := st.OpenStream(ctx, c.Request, renderType)
	if err != nil {
		a.streamFail(c, err)
		return
	}
	if len(files) > 0 {
		if err := st.AddStreamFiles(ctx, key, files); err != nil {
			st.EndStream(key)
			a.streamFail(c, err)
			return
		}
	}
	host, port := publicHostPort(c.Request)
	c.JSON(http.StatusOK, streamReply{ServerURL: host, Port: port, SessionID: key, RenderType: renderType})
}

// publicHostPort is where the client reached this server: the host and
// port of its Host header, the scheme's port when it names none.
func publicHostPort(r *http.Request) (string, int) {
	port := 80
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		port = 443
	}
	host := r.Host
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		host = h
		if n, err := strconv.Atoi(p); err == nil {
			port = n
		}
	}
	return host, port
}

func (a *API) enableStreamAccess(c *gin.Context, st Streamer) {
	raw, byName := c.GetHeader("items"), false
	if raw == "" {
		raw, byName = c.GetHeader("itemnames"), true
	}
	refs, err := parseAccess(raw)
	if err != nil {
		a.streamFail(c, err)
		return
	}
	ctx := c.Request.Context()
	files, err := a.streamFiles(ctx, refs, byName)
	if err != nil {
		a.streamFail(c, err)
		return
	}
	if err := st.AddStreamFiles(ctx, c.Param("sessionid"), files); err != nil {
		a.streamFail(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"success": true})
}

// parseAccess reads the items or itemnames header: a JSON array of
// strings.
func parseAccess(raw string) ([]string, error) {
	if strings.TrimSpace(raw) == "" {
		return nil, fmt.Errorf("%w: no items or itemnames header", errBadAccess)
	}
	if len(raw) > maxArgLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", errBadAccess, maxArgLen)
	}
	var refs []string
	if err := json.Unmarshal([]byte(raw), &refs); err != nil {
		return nil, fmt.Errorf("%w: not a JSON array of strings", errBadAccess)
	}
	if len(refs) == 0 || len(refs) > maxAccessItems {
		return nil, fmt.Errorf("%w: 1 to %d items", errBadAccess, maxAccessItems)
	}
	for _, r := range refs {
		if r == "" || strings.ContainsRune(r, '\uFFFD') {
			return nil, fmt.Errorf("%w: an empty or invalid item", errBadAccess)
		}
	}
	return refs, nil
}

// streamFiles are the files of the items refs names (ids, or names with
// byName) that a session's model directory gets: every output of each
// item, under its own name (<item name>.glb, …), so that a viewer asks for
// the model by the item's name.
func (a *API) streamFiles(ctx context.Context, refs []string, byName bool) ([]farmapi.ModelFile, error) {
	var all []items.Item
	if byName {
		var err error
		if all, err = a.svc.List(ctx); err != nil {
			return nil, err
		}
	}
	var files []farmapi.ModelFile
	for _, ref := range refs {
		var it items.Item
		if byName {
			found := false
			for _, cand := range all {
				// The newest converted item of that name.
				if cand.Name == ref && cand.State == items.StateSuccess && (!found || cand.Updated.After(it.Updated)) {
					it, found = cand, true
				}
			}
			if !found {
				return nil, fmt.Errorf("%w: no converted item named %q", conversion.ErrNotFound, ref)
			}
		} else {
			var err error
			if it, err = a.svc.Get(ctx, ref); err != nil {
				return nil, err
			}
		}
		if it.State != items.StateSuccess || len(it.Files) == 0 {
			return nil, fmt.Errorf("%w: item %s has no converted files", conversion.ErrInvalid, it.ID)
		}
		for _, f := range it.Files {
			if farmapi.CheckFileName(f.Name) != nil {
				continue
			}
			u, err := a.svc.PresignOutput(ctx, it.ID, f.Name, presignTTL)
			if err != nil {
				return nil, err
			}
			files = append(files, farmapi.ModelFile{Name: f.Name, Item: it.ID, Source: f.Name, Size: f.Size,
				Version: "g" + strconv.Itoa(it.Generation) + "-" + strconv.FormatInt(f.Size, 10), URL: u})
		}
	}
	return files, nil
}
