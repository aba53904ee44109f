// Package classcad is a stand-in for a ClassCAD instance in drover's tests.
// Started as
//
//	EXE socketclient --port P --ccwss --binary --id GUID
//
// it connects to a farm's private port and speaks the dial protocol (see
// docs/protocol.md) the way a real instance does: it says nothing until the
// farm's {"command":"configuration",…} arrives, then answers
// {"response":"Handshake","id":GUID} and {"response":"Ready"}, and answers
// every command of a frame with
// {"command":"Result","from":CMD,"transactionID":T,"result":R}.
//
// Test binaries run it from TestMain (Main). It is not used by drover
// itself.
package classcad

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/gorilla/websocket"
)

// Args are the arguments a pool gives the program, ClassCAD's own command
// line with the farm's template fields.
var Args = []string{"socketclient", "--port", "{{.PrivatePort}}", "--ccwss", "--binary", "--id", "{{.ID}}"}

// Main runs the instance with args (os.Args[1:]) and returns its exit
// status. Besides ClassCAD's own flags it takes two for tests:
//
//	--early            send the Handshake at once, before the configuration
//	                   arrives (drover's earlier test instances did)
//	--handshake-id ID  name ID in the Handshake instead of --id
//
// The commands it answers, inside BeginFrame … EndFrame:
//
//	BeginFrame, EndFrame        a Result with no "result"
//	{"command":"echo","value":V}  result V
//	{"command":"add","a":A,"b":B} result A+B
//	{"command":"pid"}           result: this process's id
//	{"command":"config"}        result: the configuration it was sent
//	{"command":"fail"}          a Result with "error":"it failed"
//	{"command":"blob"}          a binary message [1 2 3], then a Result
//	{"command":"drop"}          closes the connection and stays alive
//	{"command":"exit"}          exits with status 3
//	anything else               a Result with "error":"unknown command"
func Main(args []string) int {
	if err := run(args, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "classcad:", err)
		return 1
	}
	return 0
}

func run(args []string, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "socketclient" {
		return fmt.Errorf("want socketclient --port P --id ID, got %q", args)
	}
	fs := flag.NewFlagSet("socketclient", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.String("port", "", "the farm's private port")
	id := fs.String("id", "", "this instance's id")
	fs.Bool("ccwss", false, "ClassCAD's WebSocket client (the only one here)")
	fs.Bool("binary", false, "accepted for ClassCAD's command line; messages are text JSON")
	early := fs.Bool("early", false, "send the Handshake before the configuration arrives")
	hsID := fs.String("handshake-id", "", "the id named in the Handshake (default --id)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *port == "" || *id == "" {
		return fmt.Errorf("want --port and --id")
	}
	if *hsID == "" {
		*hsID = *id
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+net.JoinHostPort("127.0.0.1", *port)+"/", nil)
	if err != nil {
		return err
	}
	defer ws.Close()

	handshake := map[string]any{"response": "Handshake", "id": *hsID}
	if *early {
		if err := ws.WriteJSON(handshake); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
	}
	var configuration map[string]any
	if err := ws.ReadJSON(&configuration); err != nil {
		return fmt.Errorf("read configuration: %w", err)
	}
	if configuration["command"] != "configuration" {
		return fmt.Errorf("want the configuration first, got %v", configuration)
	}
	if !*early {
		if err := ws.WriteJSON(handshake); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
	}
	if err := ws.WriteJSON(map[string]any{"response": "Ready"}); err != nil {
		return fmt.Errorf("ready: %w", err)
	}

	var tx json.RawMessage // the open frame's transactionID
	for {
		var cmd struct {
			Command       string          `json:"command"`
			TransactionID json.RawMessage `json:"transactionID"`
			Value         json.RawMessage `json:"value"`
			A, B          float64
		}
		if err := ws.ReadJSON(&cmd); err != nil {
			return err
		}
		reply := map[string]any{"command": "Result", "from": cmd.Command}
		switch cmd.Command {
		case "BeginFrame", "EndFrame":
			tx = cmd.TransactionID
		case "echo":
			reply["result"] = cmd.Value
		case "add":
			reply["result"] = cmd.A + cmd.B
		case "pid":
			reply["result"] = os.Getpid()
		case "config":
			reply["result"] = configuration
		case "fail":
			reply["error"] = "it failed"
		case "blob":
			if err := ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
				return err
			}
		case "drop":
			_ = ws.Close()
			time.Sleep(time.Hour) // until the farm kills it
		case "exit":
			os.Exit(3) //nolint:gocritic // a crash, on purpose: nothing is closed
		default:
			reply["error"] = "unknown command"
		}
		if tx != nil {
			reply["transactionID"] = tx
		}
		if err := ws.WriteJSON(reply); err != nil {
			return err
		}
	}
}
