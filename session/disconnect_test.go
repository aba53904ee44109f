package session

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

var codes = map[string]bool{CodeBadRequest: true, CodeNoCapacity: true, CodeTimeout: true,
	CodeInstanceLost: true, CodeTaskFailed: true, CodeRejected: true, CodeUnauthorized: true,
	CodeNotFound: true, CodeShutdown: true, CodeInternal: true, CodeUnavailable: true, CodeInterrupted: true}

// Every entry of the table can go on the wire as it is.
func TestDisconnectTable(t *testing.T) {
	seen := map[Disconnect]bool{}
	reasons := map[string]bool{}
	for _, d := range Disconnects {
		t.Run(d.Reason, func(t *testing.T) {
			require.False(t, seen[d], "listed twice")
			seen[d] = true
			require.False(t, reasons[d.Reason], "two entries share the reason")
			reasons[d.Reason] = true
			switch d.Code {
			case 0, CloseNormal, CloseGoingAway, CloseProtocolError, CloseUnsupportedData, CloseInvalidPayload,
				ClosePolicyViolation, CloseMessageTooBig, CloseInternalError, CloseServiceRestart, CloseTryAgainLater:
			default:
				t.Fatalf("close code %d is not one a server sends", d.Code)
			}
			require.NotEmpty(t, d.Reason)
			require.LessOrEqual(t, len(d.Reason), closeReasonMax, "a close frame carries it whole")
			require.True(t, utf8.ValidString(d.Reason) && plain(d.Reason))
			require.Equal(t, d.Reason, d.CloseReason())
			require.True(t, codes[d.Task.Code], "task code %q", d.Task.Code)
			require.NotEmpty(t, d.Task.Message)
			te := d.TaskError()
			require.Equal(t, d.Task, *te)
			require.NotSame(t, te, d.TaskError(), "a fresh error each time")
		})
	}
	// The four meanings 1008 had are four entries now.
	for _, d := range []Disconnect{DisconnectUnknownPool, DisconnectUnknownToken, DisconnectRejected, DisconnectResumed} {
		require.Equal(t, ClosePolicyViolation, d.Code)
	}
	require.True(t, DisconnectRestart.Resumable)
	require.False(t, DisconnectShutdown.Resumable)
	require.Equal(t, "shutting down (1001)", DisconnectShutdown.String())
	require.Equal(t, "client closed", DisconnectClientClosed.String())
}

// docs/protocol.md documents every entry: its close code, reason and
// whether it is resumable, on one table row.
func TestDisconnectTableDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	require.NoError(t, err)
	rows := map[string]string{}
	for line := range strings.SplitSeq(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) > 4 && strings.HasPrefix(strings.TrimSpace(cells[1]), "`Disconnect") {
			rows[strings.Trim(strings.TrimSpace(cells[2]), "`")] = line
		}
	}
	for _, d := range Disconnects {
		row, ok := rows[d.Reason]
		require.True(t, ok, "no row for %q in the disconnect table of docs/protocol.md", d.Reason)
		code := "—"
		if d.Code != 0 {
			code = strconv.Itoa(d.Code)
		}
		require.Contains(t, row, "| "+code+" |", "close code of %q", d.Reason)
		resumable := "no"
		if d.Resumable {
			resumable = "yes"
		}
		require.Contains(t, row, "| "+resumable+" |", "resumable of %q", d.Reason)
		require.Contains(t, row, "`"+d.Task.Code+"`", "task code of %q", d.Reason)
	}
}
