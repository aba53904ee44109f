package e2e_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/internal/lib/forkthread"
	"github.com/drover-dev/drover/internal/testkit/classcad"
)

// The instance programs of these tests are the test binary itself: the farm
// starts it with childEnv set, and TestMain runs the child instead of the
// tests.
const (
	childEnv = "DROVER_E2E_CHILD"
	// spawnLogEnv names a file every child appends one line to as it
	// starts ("MODE INSTANCE-ID PID"), so a test can count the processes
	// the farm really started.
	spawnLogEnv = "DROVER_E2E_SPAWNS"
	// farmURLEnv is the farm's base URL, where stream children send their
	// liveliness reports.
	farmURLEnv = "DROVER_FARM_URL"
	// pingEnv is how often a stream child pings (a duration; empty: never).
	pingEnv = "DROVER_E2E_PING"

	// delimiter ends each answer of the stdio child.
	delimiter = "--end--"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode))
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(forkthread.Goroutine))
}

// runChild is the instance program. Modes:
//
//	stdio          websocketd style: answers stdin lines (stdioChild)
//	dial           ClassCAD style (classcad.Main): connects back to the
//	               farm, says nothing until the farm's configuration came
//	dial-early     the same, started with --early: sends its Handshake at
//	               once
//	dial-never     a dial instance that never connects
//	stream         SC-server style: echoes WebSocket messages, reports
//	               ready, then pings every $DROVER_E2E_PING
//	stream-silent  the same, but reports ready once and never pings
func runChild(mode string) int {
	noteSpawn(mode)
	switch mode {
	case "stdio":
		return stdioChild()
	case "dial", "dial-early":
		return classcad.Main(os.Args[1:])
	case "dial-never":
		time.Sleep(time.Hour) // until the farm gives up and kills it
		return 0
	case "stream", "stream-silent":
		return streamChild()
	}
	fmt.Fprintf(os.Stderr, "child: unknown mode %q\n", mode)
	return 2
}

func noteSpawn(mode string) {
	path := os.Getenv(spawnLogEnv)
	if path == "" {
		return
	}
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return
	}
	// One short write to an O_APPEND file: lines of concurrent children do
	// not interleave.
	_, _ = fmt.Fprintf(fh, "%s %s %d\n", mode, os.Getenv("DROVER_INSTANCE_ID"), os.Getpid())
	_ = fh.Close()
}

// stdioChild answers each stdin line, then prints the delimiter line:
//
//	{"op":"twice","x":N}  {"x":N} and {"x":2N}
//	{"op":"text"}         plain text (not JSON)
//	{"op":"pid"}          {"pid":PID}
//	{"op":"count"}        {"count":K}, K counting this process's count ops
func stdioChild() int {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	count := 0
	for sc.Scan() {
		var in struct {
			Op string `json:"op"`
			X  int    `json:"x"`
		}
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			fmt.Fprintf(out, "bad input: %v\n", err)
		} else {
			switch in.Op {
			case "twice":
				fmt.Fprintf(out, "{\"x\":%d}\n{\"x\":%d}\n", in.X, 2*in.X)
			case "text":
				fmt.Fprintln(out, "plain text")
			case "pid":
				fmt.Fprintf(out, "{\"pid\":%d}\n", os.Getpid())
			case "count":
				count++
				fmt.Fprintf(out, "{\"count\":%d}\n", count)
			default:
				fmt.Fprintf(out, "unknown op %q\n", in.Op)
			}
		}
		fmt.Fprintln(out, delimiter)
		if err := out.Flush(); err != nil {
			return 1
		}
	}
	return 0
}

// streamChild serves WebSockets on $DROVER_PORT and echoes every message
// with its type, reports ready to the farm, and pings every $DROVER_E2E_PING
// (never when unset). The farm stops it with SIGTERM.
func streamChild() int {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", os.Getenv("DROVER_PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	go func() { _ = http.Serve(ln, http.HandlerFunc(echo)) }()
	if err := report("ready"); err != nil {
		fmt.Fprintln(os.Stderr, "child: ready report:", err)
		return 1
	}
	every, _ := time.ParseDuration(os.Getenv(pingEnv))
	if every <= 0 {
		time.Sleep(time.Hour) // silent until the farm kills it
		return 0
	}
	for range time.Tick(every) {
		if err := report("ping"); err != nil {
			fmt.Fprintln(os.Stderr, "child: ping:", err)
		}
	}
	return 0
}

var echoUpgrader = websocket.Upgrader{}

func echo(w http.ResponseWriter, r *http.Request) {
	ws, err := echoUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	for {
		typ, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		if err := ws.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}

// report posts a liveliness report, HOOPS SC-server style, to the farm; a
// report from the farm's host needs no token.
func report(state string) error {
	u := os.Getenv(farmURLEnv) + "/liveliness/" + url.PathEscape(os.Getenv("DROVER_INSTANCE_ID")) +
		"?liveliness=" + state
	resp, err := http.Post(u, "", nil)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("liveliness %s: %s", state, resp.Status)
	}
	return nil
}
