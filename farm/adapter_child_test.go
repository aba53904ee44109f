package farm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/drover-dev/drover/internal/testkit/classcad"
)

// runAdapterChild runs the instance programs of the adapter tests. Modes:
//
//	dial   ClassCAD style (classcad.Main): started as socketclient --port P
//	       --ccwss --binary --id GUID, connects to the farm's private port,
//	       waits for the configuration, handshakes, answers commands
//	stdio  websocketd style: answer each stdin line (see stdioChild)
func runAdapterChild(mode string) (int, bool) {
	switch mode {
	case "dial":
		return classcad.Main(os.Args[1:]), true
	case "stdio":
		return stdioChild(), true
	}
	return 0, false
}

// stdioChild reads one JSON object per stdin line:
//
//	{"print":[LINES], "sleep":MS, "echo":true, "stderr":TEXT, "exit":CODE, "hush":true}
//
// It exits with CODE, or closes its stdout and sleeps (hush), or writes TEXT
// to stderr, echoes the input line when asked, prints each line (sleeping
// MS between them), then the line in $STDIO_DELIM if set.
func stdioChild() int {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var in struct {
			Print  []string `json:"print"`
			Sleep  int      `json:"sleep"`
			Echo   bool     `json:"echo"`
			Stderr string   `json:"stderr"`
			Exit   *int     `json:"exit"`
			Hush   bool     `json:"hush"`
		}
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			fmt.Println("bad input:", err)
			continue
		}
		if in.Exit != nil {
			os.Exit(*in.Exit)
		}
		if in.Hush {
			_ = os.Stdout.Close()
			time.Sleep(time.Hour)
		}
		if in.Stderr != "" {
			fmt.Fprintln(os.Stderr, in.Stderr)
		}
		if in.Echo {
			fmt.Println(sc.Text())
		}
		for i, line := range in.Print {
			if i > 0 && in.Sleep > 0 {
				time.Sleep(time.Duration(in.Sleep) * time.Millisecond)
			}
			fmt.Println(line)
		}
		if d := os.Getenv("STDIO_DELIM"); d != "" {
			fmt.Println(d)
		}
	}
	return 0
}
