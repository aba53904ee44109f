package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// browser starts Debian's Chromium, headless, with any extra options, and
// returns a context for its first tab.
func browser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	exe := testutil.Program(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // tests may run as root, where Chromium's sandbox refuses to start
		chromedp.WindowSize(1280, 900),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first call starts the browser and ties its life to the context
	// it is given: ctx, not one with a deadline.
	require.NoError(t, chromedp.Do(ctx), "start %s", exe)
	return ctx
}

// watchConsole collects the console errors and uncaught exceptions of the
// tab of ctx from now on; the test fails on any once the tab is closed,
// which the returned func does.
func watchConsole(ctx context.Context, t *testing.T) (closeTab func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	messages := chromedp.Console(ctx)
	done := make(chan []string)
	go func() {
		var problems []string
		for m, err := range messages {
			if err != nil {
				break // the tab's context ended
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				problems = append(problems, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m))
			}
		}
		done <- problems
	}()
	var once sync.Once
	closeTab = func() {
		once.Do(func() {
			cancel()
			require.Empty(t, <-done, "the page logged errors")
		})
	}
	t.Cleanup(closeTab)
	return closeTab
}

// screenshot saves a PNG of the tab under dir and checks it is one.
func screenshot(ctx context.Context, t *testing.T, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.Greater(t, len(png), 1000)
	require.Equal(t, "\x89PNG", string(png[:4]))
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
}

// TestBrowser uses drover up, on its embedded defaults, as a person with a
// browser would: the try page opens a session, sends tasks and shows their
// results; the dashboard, in a second tab, shows that session live; a
// logout on the try page takes it off the dashboard. Screenshots go to
// artifactDir.
func TestBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	watchConsole(ctx, t)
	u := startUp(t)
	base := "http://" + u.base
	shots := artifactDir(t)
	do := func(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		require.NoError(t, chromedp.Do(tctx, steps...), what)
	}
	text := func(ctx context.Context, sel string) string {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(sel)))
		require.NoError(t, err, "text of %s", sel)
		return s
	}
	// until waits for a JavaScript condition to hold on the page.
	until := func(ctx context.Context, what, cond string) {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err := chromedp.Run(tctx, chromedp.Poll[bool](cond))
		require.NoError(t, err, what)
	}

	// The try page: open a session on the default pool.
	do(ctx, "open a session",
		chromedp.Navigate(base+"/ui/try.html"),
		chromedp.WaitVisible(chromedp.CSS(`#open:not([disabled])`)),
		chromedp.Click(chromedp.CSS(`#open`)),
		chromedp.WaitVisible(chromedp.CSS(`#state.state-open`)),
	)
	sessionID, instance := text(ctx, "#session"), text(ctx, "#instance")
	require.Regexp(t, `^[A-Za-z0-9_-]{8,}$`, sessionID)
	require.True(t, strings.HasPrefix(instance, "default-"), "instance %q", instance)

	// set, then get: the state lives in the session's instance.
	do(ctx, "send set",
		chromedp.SetValue(chromedp.CSS(`form[data-cmd="set"] input[name="value"]`), "green"),
		chromedp.Click(chromedp.CSS(`form[data-cmd="set"] button`)),
	)
	until(ctx, "set done", `document.getElementById('st-ok').textContent === '1'`)
	do(ctx, "send get", chromedp.Click(chromedp.CSS(`form[data-cmd="get"] button`)))
	until(ctx, "get done", `document.getElementById('st-ok').textContent === '2'`)
	log := text(ctx, "#log")
	require.Contains(t, log, `{"command":"set","key":"color","value":"green"}`)
	require.Contains(t, log, `"value":"green"}`, "get answers what set stored:\n%s", log)
	require.Equal(t, "0", text(ctx, "#st-failed"))
	screenshot(ctx, t, shots, "try.png")

	// The dashboard, in a second tab, lists the live session.
	dash, cancelDash := chromedp.NewContext(ctx)
	defer cancelDash()
	closeDash := watchConsole(dash, t)
	do(dash, "load the dashboard", chromedp.Navigate(base+"/ui/"))
	until(dash, "the dashboard lists the session",
		`document.getElementById('sessions').textContent.includes(`+jsString(sessionID)+`)`)
	require.Contains(t, text(dash, "#sessions"), instance)
	require.Equal(t, "1", text(dash, "#cap-busy"))
	screenshot(dash, t, shots, "dashboard.png")

	// Logout on the try page; the dashboard drops the session on its own
	// (it follows the manager's event stream).
	do(ctx, "logout",
		chromedp.Click(chromedp.CSS(`#logout`)),
		chromedp.WaitVisible(chromedp.CSS(`#state.state-closed`)),
	)
	until(dash, "the dashboard drops the session",
		`!document.getElementById('sessions').textContent.includes(`+jsString(sessionID)+`)`)
	closeDash()
}

// jsString quotes s for JavaScript source.
func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
