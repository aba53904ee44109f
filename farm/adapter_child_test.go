package farm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

// runAdapterChild runs the instance programs of the adapter tests. Modes:
//
//	dial   ClassCAD style: connect to the farm's private port (argument 1)
//	       as the instance of argument 2, handshake, answer commands
//	stdio  websocketd style: answer each stdin line (see stdioChild)
func runAdapterChild(mode string) (int, bool) {
	switch mode {
	case "dial":
		return dialChild(), true
	case "stdio":
		return stdioChild(), true
	}
	return 0, false
}

// dialChild answers the commands of a frame:
//
//	BeginFrame, EndFrame  {"from":NAME,"transactionID":T}
//	echo                  {"from":"echo","value":VALUE}
//	config                {"from":"config","configure":THE CONFIGURE MESSAGE}
//	fail                  {"from":"fail","error":"it failed"}
//	blob                  a binary message [1 2 3], then {"from":"blob"}
//	drop                  closes the connection and stays alive
//	exit                  exits with status 3
func dialChild() int {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "child: want PORT ID")
		return 2
	}
	port, id := os.Args[1], os.Args[2]
	ws, _, err := websocket.DefaultDialer.Dial("ws://127.0.0.1:"+port+"/", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	handshake := map[string]any{"response": "Handshake", "id": id}
	if os.Getenv("DIAL_WRONG_ID") != "" {
		handshake["id"] = "someone-else"
	}
	if err := ws.WriteJSON(handshake); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	var configure map[string]any
	if err := ws.ReadJSON(&configure); err != nil {
		fmt.Fprintln(os.Stderr, "child: read Configure:", err)
		return 1
	}
	if configure["command"] != "Configure" || configure["id"] != id {
		fmt.Fprintf(os.Stderr, "child: unexpected configuration %v\n", configure)
		return 1
	}
	_ = ws.WriteJSON(map[string]any{"response": "Loading"}) // noise before Ready
	if err := ws.WriteJSON(map[string]any{"response": "Ready"}); err != nil {
		return 1
	}
	for {
		var cmd struct {
			Command       string          `json:"command"`
			TransactionID uint64          `json:"transactionID"`
			Value         json.RawMessage `json:"value"`
		}
		if err := ws.ReadJSON(&cmd); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			return 1
		}
		var reply any
		switch cmd.Command {
		case "BeginFrame", "EndFrame":
			reply = map[string]any{"from": cmd.Command, "transactionID": cmd.TransactionID}
		case "echo":
			reply = map[string]any{"from": "echo", "value": cmd.Value}
		case "config":
			reply = map[string]any{"from": "config", "configure": configure}
		case "fail":
			reply = map[string]any{"from": "fail", "error": "it failed"}
		case "blob":
			_ = ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
			reply = map[string]any{"from": "blob"}
		case "drop":
			_ = ws.Close()
			time.Sleep(time.Hour)
		case "exit":
			os.Exit(3)
		default:
			reply = map[string]any{"from": cmd.Command, "error": map[string]any{"message": "unknown command"}}
		}
		if err := ws.WriteJSON(reply); err != nil {
			return 1
		}
	}
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
