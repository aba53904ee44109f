package main

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// towersOBJ is a model of two named objects, a slab and a tower on it, so
// that the GLB has two parts to list and name on hover. With mtl, it takes
// its materials from that file: the slab blue, the tower red (towersMTL).
func towersOBJ(mtl ...string) string {
	var b strings.Builder
	for _, m := range mtl {
		fmt.Fprintf(&b, "mtllib %s\n", m)
	}
	box := func(name string, x0, y0, z0, x1, y1, z1 float64, base int) {
		fmt.Fprintf(&b, "o %s\n", name)
		if len(mtl) > 0 {
			fmt.Fprintf(&b, "usemtl %s\n", map[string]string{"Slab": "Blue", "Tower": "Red"}[name])
		}
		for _, v := range [][3]float64{
			{x0, y0, z0}, {x1, y0, z0}, {x1, y1, z0}, {x0, y1, z0},
			{x0, y0, z1}, {x1, y0, z1}, {x1, y1, z1}, {x0, y1, z1},
		} {
			fmt.Fprintf(&b, "v %g %g %g\n", v[0], v[1], v[2])
		}
		for _, f := range [][4]int{{1, 4, 3, 2}, {5, 6, 7, 8}, {1, 2, 6, 5}, {2, 3, 7, 6}, {3, 4, 8, 7}, {4, 1, 5, 8}} {
			fmt.Fprintf(&b, "f %d %d %d %d\n", f[0]+base, f[1]+base, f[2]+base, f[3]+base)
		}
	}
	box("Slab", -2, 0, -2, 2, 0.5, 2, 0)
	box("Tower", -0.6, 0.5, -0.6, 0.6, 3, 0.6, 8)
	return b.String()
}

const towersMTL = "newmtl Red\nKd 0.8 0.15 0.1\nnewmtl Blue\nKd 0.15 0.3 0.85\n"

// artifactDir is where browser tests leave their screenshots:
// $DROVER_ARTIFACTS, else $DROVER_SCREENSHOTS, else a temporary directory.
func artifactDir(t *testing.T) string {
	t.Helper()
	for _, env := range []string{"DROVER_ARTIFACTS", "DROVER_SCREENSHOTS"} {
		if d := os.Getenv(env); d != "" {
			require.NoError(t, os.MkdirAll(d, 0o755))
			return d
		}
	}
	return t.TempDir()
}

// modelPixels is the share of the image's pixels that differ clearly from
// the background colour bg (the viewer's clear colour).
func modelPixels(t *testing.T, pngBytes []byte, bg [3]int) float64 {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(pngBytes))
	require.NoError(t, err)
	b := img.Bounds()
	var differ, all int
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			d := absInt(int(r>>8)-bg[0]) + absInt(int(g>>8)-bg[1]) + absInt(int(bl>>8)-bg[2])
			if d > 24 {
				differ++
			}
			all++
		}
	}
	require.Positive(t, all)
	return float64(differ) / float64(all)
}

func absInt(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// viewerBackground is glview.js's BACKGROUND (#eef1f5).
var viewerBackground = [3]int{0xee, 0xf1, 0xf5}

// TestConvertPageBrowser uses the conversion page of drover up, with its
// real converters, in Debian's Chromium, at a laptop's and a phone's width:
// a file chosen in the page is uploaded, its row reaches SUCCESS by the
// events of /events (the page never polls) with a thumbnail the browser
// decoded, and the 3D view draws the model's GLB with WebGL: the canvas
// screenshot must show model pixels, not only background. At laptop width
// the part under the pointer is named, a ZIP of two models asks for its
// startPath, and a reconversion comes back; at phone width an item is
// deleted through the confirmation dialog. Screenshots are saved (see
// artifactDir) and their paths logged.
func TestConvertPageBrowser(t *testing.T) {
	t.Parallel()
	testutil.Program(t, "assimp", "assimp-utils")
	testutil.Program(t, "f3d", "f3d")
	testutil.Program(t, "xvfb-run", "xvfb")
	// WebGL in headless Chromium runs on SwiftShader, its CPU renderer.
	root := browser(t, chromedp.Flag("enable-unsafe-swiftshader", true))
	u := startUp(t)
	base := "http://" + u.base
	shots := artifactDir(t)
	t.Logf("screenshots go to %s", shots)

	files := t.TempDir()
	write := func(name string, body []byte) string {
		p := filepath.Join(files, name)
		require.NoError(t, os.WriteFile(p, body, 0o644))
		return p
	}

	const slow = 3 * time.Minute // a conversion on a busy machine
	run := func(ctx context.Context, what string, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		require.NoError(t, chromedp.Do(tctx, steps...), what)
	}
	until := func(ctx context.Context, what, cond string, timeout time.Duration) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		_, err := chromedp.Run(tctx, chromedp.Poll[bool](cond))
		require.NoError(t, err, what)
	}
	eval := func(ctx context.Context, expr string) string {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(tctx, chromedp.Evaluate[string](expr))
		require.NoError(t, err, expr)
		return s
	}
	save := func(name string, b []byte) {
		t.Helper()
		require.True(t, bytes.HasPrefix(b, []byte("\x89PNG")), "%s is not a PNG", name)
		p := filepath.Join(shots, name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		t.Logf("screenshot: %s", p)
	}
	row := func(name string) string { return `li.item[data-name=` + jsString(name) + `]` }

	widths := []struct {
		name          string
		width, height int64
		opts          []chromedp.EmulateViewportOption
	}{
		{"laptop", 1280, 860, nil},
		{"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch}},
	}
	for _, w := range widths {
		// One tab per width, in turn: the machine's two cores are shared.
		ctx, cancel := chromedp.NewContext(root)
		closeTab := watchConsole(ctx, t)
		// At phone width the OBJ comes with its MTL: chosen together, they
		// are one item (uploadArray), and the view shows the MTL's colours.
		name := "towers-" + w.name + ".obj"
		upload := []string{write(name, []byte(towersOBJ()))}
		if w.name == "phone" {
			upload = []string{write(name, []byte(towersOBJ("towers-phone.mtl"))), write("towers-phone.mtl", []byte(towersMTL))}
		}

		run(ctx, "open the conversion page", 60*time.Second,
			chromedp.EmulateViewport(w.width, w.height, w.opts...),
			chromedp.Navigate(base+"/ui/convert.html"),
			chromedp.WaitVisible(chromedp.CSS(`#drop`)),
		)
		until(ctx, "the page follows /events", `document.getElementById('live').textContent === 'live'`, 30*time.Second)

		// 1. Upload an OBJ through the page's file input.
		run(ctx, "choose the OBJ", 30*time.Second, chromedp.SetUploadFiles(chromedp.CSS(`#file`), upload))
		// 2. Its row reaches SUCCESS, with a thumbnail the browser decoded.
		thumb := row(name) + `[data-state="SUCCESS"] img.thumb-img`
		until(ctx, "the row reaches SUCCESS with a thumbnail",
			`(() => { const i = document.querySelector(`+jsString(thumb)+`); return !!i && i.complete && i.naturalWidth > 0; })()`, slow)
		id := eval(ctx, `document.querySelector(`+jsString(row(name))+`).dataset.id`)
		require.Regexp(t, `^[A-Za-z0-9_-]{8,}$`, id)
		require.Contains(t, eval(ctx, `document.querySelector(`+jsString(row(name))+` + ' .item-meta').textContent`), "ago")
		full, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		require.NoError(t, err)
		save("convert-"+w.name+".png", full)

		// 3. Open the 3D view.
		run(ctx, "open the 3D view", 30*time.Second, chromedp.Click(chromedp.CSS(row(name)+` button.view`)))
		until(ctx, "the viewer drew the model",
			`(() => { const c = document.getElementById('viewer-canvas'); return c.dataset.state === 'ready' && c.dataset.item === `+jsString(id)+`; })()`,
			60*time.Second)
		require.Contains(t, eval(ctx, `document.getElementById('viewer-stats').textContent`), "2 parts")
		parts := eval(ctx, `[...document.querySelectorAll('#viewer-parts .part')].map(e => e.textContent).join(',')`)
		require.Contains(t, parts, "Slab")
		require.Contains(t, parts, "Tower")

		// 4. The canvas shows the model, not only background.
		tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
		canvas, err := chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS(`#viewer-canvas`)))
		tcancel()
		require.NoError(t, err)
		save("viewer-canvas-"+w.name+".png", canvas)
		share := modelPixels(t, canvas, viewerBackground)
		t.Logf("%s: %.1f%% of the canvas is model", w.name, share*100)
		require.Greater(t, share, 0.02, "the 3D view shows only background")
		require.Less(t, share, 0.95, "the model does not fit the view")
		if w.name == "phone" {
			var item struct{ Originals []struct{ Name string } }
			require.Equal(t, http.StatusOK, getJSON(t, base+"/api/data/"+id, "", &item))
			require.Len(t, item.Originals, 2, "the OBJ and its MTL are one item")
			red := pixelShare(t, canvas, func(r, g, b int) bool { return r > g+60 && r > b+60 })
			blue := pixelShare(t, canvas, func(r, g, b int) bool { return b > r+50 && b > g+25 })
			t.Logf("phone: %.1f%% red (Tower), %.1f%% blue (Slab)", red*100, blue*100)
			require.Greater(t, red, 0.005, "the tower's MTL colour")
			require.Greater(t, blue, 0.01, "the slab's MTL colour")
		}
		full, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
		require.NoError(t, err)
		save("viewer-"+w.name+".png", full)

		if w.name == "laptop" {
			laptopExtras(t, ctx, base, write, run, until, eval, save, row, slow)
		} else {
			// A tap names the part under the finger.
			cx, cy := canvasCenter(t, ctx, eval)
			run(ctx, "tap the model", 30*time.Second, chromedp.TapXY(cx, cy))
			until(ctx, "the tip names the tapped part",
				`(() => { const t = document.getElementById('viewer-tip'); return !t.hidden && /Slab|Tower/.test(t.textContent); })()`, 30*time.Second)
			run(ctx, "close the viewer", 30*time.Second, chromedp.Click(chromedp.CSS(`#viewer-close`)))

			// An upload shows as a row with a progress bar until the item
			// exists; a file the converter cannot read ends ERROR, with
			// the converter's words under "why?".
			eval(ctx, `window.seen = {uploading: false, progress: 0};
				new MutationObserver(() => {
					const r = document.querySelector('li.item.uploading');
					if (r) { seen.uploading = true; seen.progress = Math.max(seen.progress, Number(r.dataset.progress) || 0); }
				}).observe(document.getElementById('items'), {subtree: true, childList: true, attributes: true});
				'watching'`)
			broken := write("broken.stl", append([]byte("this is not a model\n"), bytes.Repeat([]byte(" "), 8<<20)...))
			run(ctx, "choose a broken file", 30*time.Second, chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{broken}))
			until(ctx, "the broken file ends ERROR", `(() => { const r = document.querySelector(`+jsString(row("broken.stl"))+`);
				return !!r && r.dataset.state.startsWith('ERROR - '); })()`, slow)
			require.Equal(t, "true 1", eval(ctx, `seen.uploading + ' ' + seen.progress`), "the upload's row and bar")
			run(ctx, "expand why", 30*time.Second, chromedp.Click(chromedp.CSS(row("broken.stl")+` .item-error summary`)))
			why := eval(ctx, `document.querySelector(`+jsString(row("broken.stl"))+` + ' .item-detail').textContent`)
			require.NotEmpty(t, why)
			require.Equal(t, why, eval(ctx, `document.querySelector(`+jsString(row("broken.stl"))+` + ' .pill').title`))
			t.Logf("detailedError shown: %q", why)
			full, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
			require.NoError(t, err)
			save("error-"+w.name+".png", full)

			// Delete through the confirmation dialog.
			run(ctx, "ask to delete", 30*time.Second,
				chromedp.Click(chromedp.CSS(row(name)+` button.danger`)),
				chromedp.WaitVisible(chromedp.CSS(`#confirm-ok`)),
			)
			full, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
			require.NoError(t, err)
			save("delete-"+w.name+".png", full)
			run(ctx, "confirm", 30*time.Second, chromedp.Click(chromedp.CSS(`#confirm-ok`)))
			until(ctx, "the row is gone", `!document.querySelector(`+jsString(row(name))+`)`, 30*time.Second)
			res, err := http.Get(base + "/api/data/" + id)
			require.NoError(t, err)
			res.Body.Close()
			require.Equal(t, http.StatusNotFound, res.StatusCode)
		}
		closeTab()
		cancel()
	}
}

// laptopExtras: hover names a part, a reconversion comes back SUCCESS with
// a new generation, and a ZIP of two models offers its startPath choice.
func laptopExtras(t *testing.T, ctx context.Context, base string, write func(string, []byte) string,
	run func(context.Context, string, time.Duration, ...chromedp.Action[chromedp.Void]),
	until func(context.Context, string, string, time.Duration), eval func(context.Context, string) string,
	save func(string, []byte), row func(string) string, slow time.Duration,
) {
	// The part under the pointer: move the mouse over the canvas until the
	// tip names one (the middle of the view holds the tower or the slab).
	cx, cy := canvasCenter(t, ctx, eval)
	run(ctx, "hover the model", 30*time.Second,
		chromedp.MouseEvent("mouseMoved", cx-40, cy-40),
		chromedp.MouseEvent("mouseMoved", cx, cy),
	)
	until(ctx, "the tip names the part under the pointer",
		`(() => { const t = document.getElementById('viewer-tip'); return !t.hidden && /Slab|Tower/.test(t.textContent); })()`, 30*time.Second)
	require.NotEmpty(t, eval(ctx, `document.querySelector('#viewer-parts .part.hover')?.textContent ?? ''`))
	full, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	save("viewer-hover-laptop.png", full)
	run(ctx, "close the viewer", 30*time.Second, chromedp.Click(chromedp.CSS(`#viewer-close`)))

	// Download: the menu lists the outputs and the original, and its links serve them.
	name := "towers-laptop.obj"
	run(ctx, "open the download menu", 30*time.Second,
		chromedp.Click(chromedp.CSS(row(name)+` .menu summary`)),
		chromedp.WaitVisible(chromedp.CSS(row(name)+` .menu-list a`)),
	)
	links := eval(ctx, `[...document.querySelectorAll(`+jsString(row(name)+` .menu-list a`)+`)].map(a => a.querySelector('.dl-type').textContent + '=' + a.getAttribute('download')).join(',')`)
	require.Contains(t, links, "glb=")
	require.Contains(t, links, "png=")
	require.Contains(t, links, "original="+name)
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	got, err := chromedp.Run(tctx, chromedp.Evaluate[string](`(async () => {
		const a = [...document.querySelectorAll(`+jsString(row(name)+` .menu-list a`)+`)].find(a => a.getAttribute('download').endsWith('.glb'));
		const r = await fetch(a.href);
		const b = new Uint8Array(await r.arrayBuffer());
		return r.status + ' ' + r.headers.get('content-type') + ' ' + String.fromCharCode(...b.slice(0, 4));
	})()`, chromedp.EvalAwaitPromise))
	cancel()
	require.NoError(t, err)
	require.Equal(t, "200 model/gltf-binary glTF", got)
	full, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	save("download-laptop.png", full)
	run(ctx, "close the download menu", 30*time.Second, chromedp.Click(chromedp.CSS(row(name)+` .menu summary`)))

	// Reconvert: the row goes back to work and returns SUCCESS.
	gen := eval(ctx, `String(document.querySelector(`+jsString(row(name))+`).dataset.generation)`)
	run(ctx, "reconvert", 30*time.Second, chromedp.Click(chromedp.CSS(row(name)+` button.reconvert`)))
	until(ctx, "the reconversion ends SUCCESS", `(() => { const r = document.querySelector(`+jsString(row(name))+`);
		return r.dataset.state === 'SUCCESS' && r.dataset.generation !== `+jsString(gen)+`; })()`, slow)

	// A ZIP of two models: the page lists them and sends the one picked.
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	for _, n := range []string{"asm/first.obj", "asm/second.obj", "asm/readme.txt"} {
		f, err := zw.Create(n)
		require.NoError(t, err)
		_, err = f.Write([]byte(towersOBJ()))
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	zipPath := write("two-models.zip", zb.Bytes())
	run(ctx, "choose the ZIP", 30*time.Second,
		chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{zipPath}),
		chromedp.WaitVisible(chromedp.CSS(`#zip`)),
	)
	require.Equal(t, "asm/first.obj,asm/second.obj", eval(ctx, `[...document.querySelectorAll('#startpath option')].map(o => o.value).join(',')`))
	run(ctx, "pick the second model", 30*time.Second, chromedp.SetValue(chromedp.CSS(`#startpath`), "asm/second.obj"))
	full, err = chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	save("zip-laptop.png", full)
	run(ctx, "upload the ZIP", 30*time.Second, chromedp.Click(chromedp.CSS(`#zip-upload`)))
	until(ctx, "the ZIP's item ends SUCCESS", `(() => { const r = document.querySelector(`+jsString(row("two-models.zip"))+`);
		return !!r && r.dataset.state === 'SUCCESS'; })()`, slow)
	id := eval(ctx, `document.querySelector(`+jsString(row("two-models.zip"))+`).dataset.id`)
	var item struct{ StartPath, ConversionState string }
	require.Equal(t, http.StatusOK, getJSON(t, base+"/api/data/"+id, "", &item))
	require.Equal(t, "asm/second.obj", item.StartPath)
	require.Equal(t, "SUCCESS", item.ConversionState)

	// A STEP assembly made by OpenCASCADE: the view lists its named parts
	// and draws each in its own colour.
	stepPath := machineSTEP(t, write)
	run(ctx, "choose the STEP", 30*time.Second, chromedp.SetUploadFiles(chromedp.CSS(`#file`), []string{stepPath}))
	until(ctx, "the STEP item ends SUCCESS", `(() => { const r = document.querySelector(`+jsString(row("machine.step"))+`);
		return !!r && r.dataset.state === 'SUCCESS'; })()`, slow)
	stepID := eval(ctx, `document.querySelector(`+jsString(row("machine.step"))+`).dataset.id`)
	run(ctx, "open the STEP's 3D view", 30*time.Second, chromedp.Click(chromedp.CSS(row("machine.step")+` button.view`)))
	until(ctx, "the viewer drew the STEP",
		`(() => { const c = document.getElementById('viewer-canvas'); return c.dataset.state === 'ready' && c.dataset.item === `+jsString(stepID)+`; })()`,
		60*time.Second)
	require.Equal(t, "Machine,Base,Shaft", eval(ctx, `[...document.querySelectorAll('#viewer-parts span')].map(e => e.textContent).join(',')`))
	tctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	canvas, err := chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS(`#viewer-canvas`)))
	cancel()
	require.NoError(t, err)
	save("viewer-step-laptop.png", canvas)
	green := pixelShare(t, canvas, func(r, g, b int) bool { return g > r+25 && g > b+15 })
	orange := pixelShare(t, canvas, func(r, g, b int) bool { return r > g+40 && g > b+10 })
	t.Logf("STEP view: %.1f%% green (Base), %.1f%% orange (Shaft)", green*100, orange*100)
	require.Greater(t, green, 0.01, "the base's colour")
	require.Greater(t, orange, 0.005, "the shaft's colour")

	// Stream: the same model through a streaming session, from drover up's
	// reference viewer instance over its WebSocket.
	require.True(t, streamingServed(t, base), "drover up serves GET /api/streamingSession")
	run(ctx, "stream the model", 30*time.Second, chromedp.Click(chromedp.CSS(`#viewer-stream`)))
	until(ctx, "the viewer drew the streamed model",
		`(() => { const c = document.getElementById('viewer-canvas'); return c.dataset.state === 'ready' && c.dataset.source === 'stream'; })()`,
		2*time.Minute)
	require.Contains(t, eval(ctx, `document.getElementById('viewer-stats').textContent`), "through a streaming session")
	require.Equal(t, "Machine,Base,Shaft", eval(ctx, `[...document.querySelectorAll('#viewer-parts span')].map(e => e.textContent).join(',')`))
	tctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	canvas, err = chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS(`#viewer-canvas`)))
	cancel()
	require.NoError(t, err)
	save("viewer-streamed-laptop.png", canvas)
	require.Greater(t, modelPixels(t, canvas, viewerBackground), 0.02, "the streamed model is drawn")
	run(ctx, "close the viewer", 30*time.Second, chromedp.Click(chromedp.CSS(`#viewer-close`)))
}

// machineSTEP writes machine.step with OpenCASCADE's Draw: an assembly
// "Machine" of a green plate "Base" and an orange cylinder "Shaft".
func machineSTEP(t *testing.T, write func(string, []byte) string) string {
	t.Helper()
	draw := testutil.Program(t, "occt-draw", "occt-draw")
	out := write("machine.step", nil)
	script := write("machine.tcl", []byte(`pload MODELING OCAF XDE
box base -3 -3 0 6 6 1
pcylinder shaft 1 4
ttranslate shaft 0 0 1
compound base shaft c
XNewDoc D
XAddShape D c 1
SetName D 0:1:1:1 Machine
SetName D 0:1:1:2 Base
SetName D 0:1:1:3 Shaft
XSetColor D 0:1:1:2 0.2 0.6 0.3
XSetColor D 0:1:1:3 0.9 0.4 0.1
WriteStep D {`+out+`}
exit
`))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, draw, "-b", "-f", script).CombinedOutput()
	require.NoError(t, err, "%s", b)
	fi, err := os.Stat(out)
	require.NoError(t, err)
	require.Positive(t, fi.Size(), "draw wrote no STEP:\n%s", b)
	return out
}

// pixelShare is the share of an image's pixels whose 8-bit colour passes is.
func pixelShare(t *testing.T, pngBytes []byte, is func(r, g, b int) bool) float64 {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(pngBytes))
	require.NoError(t, err)
	bounds := img.Bounds()
	var n, all int
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			if is(int(r>>8), int(g>>8), int(b>>8)) {
				n++
			}
			all++
		}
	}
	return float64(n) / float64(all)
}

// canvasCenter is the middle of the 3D view's canvas, in CSS pixels.
func canvasCenter(t *testing.T, ctx context.Context, eval func(context.Context, string) string) (x, y float64) {
	t.Helper()
	var box struct{ X, Y, W, H float64 }
	require.NoError(t, json.Unmarshal([]byte(eval(ctx,
		`JSON.stringify((() => { const r = document.getElementById('viewer-canvas').getBoundingClientRect(); return {X: r.x, Y: r.y, W: r.width, H: r.height}; })())`)), &box))
	return box.X + box.W/2, box.Y + box.H/2
}

// streamingServed probes for GET /api/streamingSession with an unreadable
// CS-API-Arg: the route refuses it (400) before placing anything; a build
// without streaming sessions has no such route (404).
func streamingServed(t *testing.T, base string) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/api/streamingSession", nil)
	require.NoError(t, err)
	req.Header.Set("CS-API-Arg", "{not json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, res.StatusCode)
	return res.StatusCode == http.StatusBadRequest
}
