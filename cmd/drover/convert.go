package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func newConvertCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "convert FILE...",
		Short: "Convert CAD and mesh files on a drover server and download the results",
		Long: `convert uploads FILE to a drover server's conversion API (the HOOPS conversion
server's, under /api) with a progress bar, waits for the conversion on the
server's /events, and downloads the outputs into -o DIR. Several files are one
item (a model and the files it refers to): --start-path names the model, by
default the first file. A ZIP archive is one file; --start-path names the model
inside it when it holds several. With --shattered, a STEP, IGES or BREP
assembly is also cut into one GLB per part, downloaded with the assembly's
index.xml into DIR/shattered.

It exits 0 when the conversion succeeded, and 1 with the server's reason and
detail when it ended in ERROR.`,
		Example: `  drover convert part.step
  drover convert --to glb,png,stl -o out/ assembly.zip --start-path asm/top.step
  drover convert --shattered -o out/ assembly.step`,
		Args: cobra.MinimumNArgs(1),
	}
	fs := cmd.Flags()
	server := fs.String("server", cmp.Or(os.Getenv("DROVER_SERVER"), "http://localhost:8181"), "the drover server's base URL (DROVER_SERVER)")
	to := fs.StringSlice("to", nil, "outputs to make: glb, png, stl, obj (default glb and png)")
	startPath := fs.String("start-path", "", "the model among several files, or inside a ZIP")
	outDir := fs.StringP("output", "o", ".", "directory the outputs are written to")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up waiting after this long")
	quiet := fs.Bool("quiet", false, "no progress bar")
	shattered := fs.Bool("shattered", false, "also a GLB per part of a CAD assembly and its index (processShattered), into -o DIR/shattered")
	cmd.RunE = func(cmd *cobra.Command, files []string) error {
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		c := convertRun{base: strings.TrimRight(*server, "/"), files: files, to: *to, startPath: *startPath,
			out: *outDir, quiet: *quiet, shattered: *shattered, stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr()}
		return c.run(ctx)
	}
	return cmd
}

// convertRun is one `drover convert`.
type convertRun struct {
	base           string
	files, to      []string
	startPath, out string
	quiet          bool
	shattered      bool
	stdout, stderr io.Writer
}

type convertData struct {
	Name            string   `json:"name"`
	ConversionState string   `json:"conversionState"`
	DetailedError   string   `json:"detailedError"`
	Files           []string `json:"files"`
	Shattered       []struct {
		Name string `json:"name"`
	} `json:"shattered"`
}

func (c *convertRun) run(ctx context.Context) error {
	if _, err := url.Parse(c.base); err != nil || !strings.HasPrefix(c.base, "http") {
		return fmt.Errorf("--server %q is not an http(s) URL", c.base)
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	// Listen before uploading, so that no change is missed.
	events, err := c.events(ctx)
	if err != nil {
		return err
	}
	id, err := c.upload(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "converting %s (item %s)\n", filepath.Base(c.files[0]), id)
	data, err := c.wait(ctx, id, events)
	if err != nil {
		return err
	}
	if data.ConversionState != "SUCCESS" {
		return fmt.Errorf("%s: %s", data.ConversionState, strings.TrimSpace(data.DetailedError))
	}
	for _, f := range data.Files {
		p, err := c.download(ctx, "/api/fileByName/", id, f, c.out)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, p)
	}
	if len(data.Shattered) > 0 {
		dir := filepath.Join(c.out, "shattered")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for _, f := range data.Shattered {
			p, err := c.download(ctx, "/api/shattered/", id, f.Name, dir)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, p)
		}
	}
	return nil
}

// arg is the CS-API-Arg header of the upload.
func (c *convertRun) arg() (string, error) {
	a := map[string]any{}
	if len(c.to) > 0 {
		var cl []string
		for _, t := range c.to {
			t = strings.ToLower(strings.TrimSpace(t))
			if t == "" || strings.ContainsAny(t, " _-=/") {
				return "", fmt.Errorf("--to %q is not an output type", t)
			}
			cl = append(cl, "--output_"+t)
		}
		a["conversionCommandLine"] = cl
	}
	if len(c.files) > 1 {
		a["rootFile"] = cmp.Or(c.startPath, filepath.Base(c.files[0]))
	} else if c.startPath != "" {
		a["startPath"] = c.startPath
	}
	if c.shattered {
		a["processShattered"] = true
	}
	b, err := json.Marshal(a)
	return string(b), err
}

// upload streams the files as a multipart form, with a progress bar.
func (c *convertRun) upload(ctx context.Context) (string, error) {
	arg, err := c.arg()
	if err != nil {
		return "", err
	}
	var total int64
	for _, f := range c.files {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		if !fi.Mode().IsRegular() {
			return "", fmt.Errorf("%s is not a file", f)
		}
		total += fi.Size()
	}
	path, field := "/api/upload", "file"
	if len(c.files) > 1 {
		path, field = "/api/uploadArray", "files"
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	bar := io.Discard
	if !c.quiet {
		pb := progressbar.NewOptions64(total, progressbar.OptionSetWriter(c.stderr), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription("uploading"), progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond))
		defer func() { _ = pb.Finish() }()
		bar = pb
	}
	go func() {
		err := func() error {
			for _, f := range c.files {
				fh, err := os.Open(f)
				if err != nil {
					return err
				}
				w, err := mw.CreateFormFile(field, filepath.Base(f))
				if err == nil {
					_, err = io.Copy(io.MultiWriter(w, bar), fh)
				}
				fh.Close()
				if err != nil {
					return err
				}
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, pr)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("CS-API-Arg", arg)
	var out struct {
		ItemID string `json:"itemid"`
		Error  string `json:"ERROR"`
	}
	if err := c.do(req, &out); err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	return out.ItemID, nil
}

// do sends req and decodes its JSON answer; an answer with ERROR is an
// error.
func (c *convertRun) do(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	var e struct {
		Error string `json:"ERROR"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s (%d)", e.Error, resp.StatusCode)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	return json.Unmarshal(b, out)
}

// events subscribes to the server's /events and delivers the ids of
// changed items; nil (polling) when the server has none.
func (c *convertRun) events(ctx context.Context) (<-chan string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/events", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach %s: %w", c.base, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, nil
	}
	ch := make(chan string, 16)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var typ string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				typ = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok && strings.HasPrefix(typ, "item_") {
				var e struct {
					ID string `json:"id"`
				}
				if json.Unmarshal([]byte(v), &e) == nil {
					select {
					case ch <- e.ID:
					default: // the poll below catches up
					}
				}
			}
		}
	}()
	return ch, nil
}

// wait waits until the item's conversion ends: on each of its events, and
// every few seconds in case events were lost.
func (c *convertRun) wait(ctx context.Context, id string, events <-chan string) (convertData, error) {
	poll := time.NewTicker(3 * time.Second)
	defer poll.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/data/"+url.PathEscape(id), nil)
		if err != nil {
			return convertData{}, err
		}
		var d convertData
		if err := c.do(req, &d); err != nil {
			return d, fmt.Errorf("item %s: %w", id, err)
		}
		if d.ConversionState != "PENDING" && d.ConversionState != "UPLOADING" {
			return d, nil
		}
		if err := c.next(ctx, id, &events, poll.C); err != nil {
			return d, err
		}
	}
}

// next waits for an event of item id, or the next poll.
func (c *convertRun) next(ctx context.Context, id string, events *<-chan string, poll <-chan time.Time) error {
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the conversion: %w", ctx.Err())
		case <-poll:
			return nil
		case got, ok := <-*events:
			if !ok {
				*events = nil // the stream ended: polling goes on
			} else if got == id {
				return nil
			}
		}
	}
}

// download writes an output, from the route (/api/fileByName/ or
// /api/shattered/) into dir.
func (c *convertRun) download(ctx context.Context, route, id, name, dir string) (string, error) {
	if name == "" || name != filepath.Base(name) || name == "." || name == ".." {
		return "", fmt.Errorf("the server named an output %q", name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		c.base+route+url.PathEscape(id)+"/"+url.PathEscape(name), nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download %s: %s", name, resp.Status)
	}
	p := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, ".drover-download-*")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(tmp, resp.Body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return "", errors.Join(fmt.Errorf("download %s", name), err)
	}
	return p, nil
}
