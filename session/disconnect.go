package session

import "strconv"

// Disconnect says why a session ended or a client connection was closed,
// in the manner of centrifuge's Disconnect: the WebSocket close code and
// reason the client sees, whether the session can still be resumed, the
// error a task still in flight is answered with, and the event sent before
// the close. The values below are the whole table; the manager passes one
// of them to the disconnect hooks.
//
// Disconnect values are comparable: hooks may switch on them.
type Disconnect struct {
	// Code is the WebSocket close code. 0: the manager sends no close frame
	// of its own (the client closed or dropped the connection, or the
	// session has no WebSocket).
	Code int
	// Reason is the close frame's reason: short plain text, never details
	// of the server (they go to the log).
	Reason string
	// Resumable: the session lives on, and the client may come back with
	// its resume token (through this manager or another).
	Resumable bool
	// Task is the error frame a task in flight when the session ends this
	// way gets, before the close: every task has exactly one answer.
	Task Error
	// Event is the event sent before the close, "" for none.
	Event string
}

// WebSocket close codes (RFC 6455 7.4.1, and the IANA registry for 1012
// and 1013).
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseUnsupportedData = 1003
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseMessageTooBig   = 1009
	CloseInternalError   = 1011
	CloseServiceRestart  = 1012
	CloseTryAgainLater   = 1013
)

// Session events (the "event" member of an event frame).
const (
	EventInstanceLost = "instance_lost"
	EventIdleTimeout  = "idle_timeout"
	EventMaxLifetime  = "max_lifetime"
	EventShutdown     = "shutdown"
	EventDraining     = "draining"
)

// closeReasonMax: a control frame carries at most 125 bytes, two of them
// the code.
const closeReasonMax = 123

const interruptedByCloseMsg = "the session ended before the task finished"

// The disconnect table. Ended by the client:
var (
	// DisconnectLogout: a logout frame, GET /logout/:id or Session.Close.
	DisconnectLogout = Disconnect{Code: CloseNormal, Reason: "logout",
		Task: Error{CodeInterrupted, "the session was logged out before the task finished"}}
	// DisconnectClientClosed: the client sent a close frame; the manager
	// echoes its code.
	DisconnectClientClosed = Disconnect{Reason: "client closed",
		Task: Error{CodeInterrupted, interruptedByCloseMsg}}
	// DisconnectResumeExpired: the connection dropped and the client did
	// not come back within the resume grace window.
	DisconnectResumeExpired = Disconnect{Reason: "resume window expired",
		Task: Error{CodeInterrupted, interruptedByCloseMsg}}
	// DisconnectDroppedQueued: the connection dropped while the session
	// waited for an instance; there is nothing to resume.
	DisconnectDroppedQueued = Disconnect{Reason: "dropped while queued",
		Task: Error{CodeInterrupted, interruptedByCloseMsg}}
	// DisconnectStreamEnded: a stream session's relayed connection ended.
	DisconnectStreamEnded = Disconnect{Reason: "stream ended",
		Task: Error{CodeInterrupted, interruptedByCloseMsg}}
)

// Ended by a limit of the pool or by the operator:
var (
	// DisconnectIdleTimeout: no task for the pool's idle timeout.
	DisconnectIdleTimeout = Disconnect{Code: CloseNormal, Reason: "idle timeout",
		Task: Error{CodeTimeout, "the session was idle for too long and has ended"}, Event: EventIdleTimeout}
	// DisconnectMaxLifetime: the pool's maximum session lifetime passed.
	DisconnectMaxLifetime = Disconnect{Code: CloseNormal, Reason: "max lifetime",
		Task: Error{CodeTimeout, "the session reached its maximum lifetime and has ended"}, Event: EventMaxLifetime}
	// DisconnectFarmDrained: the session's farm was drained and stopped its
	// instance (the session had the draining event when the drain began).
	DisconnectFarmDrained = Disconnect{Code: CloseNormal, Reason: "farm drained",
		Task: Error{CodeShutdown, "the farm running the session was drained"}, Event: EventInstanceLost}
	// DisconnectEnded: an administrator ended the session (DELETE
	// /sessions/:id).
	DisconnectEnded = Disconnect{Code: ClosePolicyViolation, Reason: "ended by an administrator",
		Task: Error{CodeInterrupted, "an administrator ended the session before the task finished"}}
	// DisconnectShutdown: the manager is shutting down.
	DisconnectShutdown = Disconnect{Code: CloseGoingAway, Reason: "shutting down",
		Task: Error{CodeShutdown, "the manager is shutting down"}, Event: EventShutdown}
	// DisconnectRestart: the manager is shutting down and hands its
	// sessions to the other managers sharing its store: the client resumes
	// through any of them.
	DisconnectRestart = Disconnect{Code: CloseServiceRestart, Reason: "manager restarting: resume elsewhere",
		Resumable: true, Task: Error{CodeShutdown, "the manager is restarting: resume the session through another manager"},
		Event: EventShutdown}
	// DisconnectResumed: the session was resumed on another connection (to
	// this manager or another one); the older connection is closed.
	DisconnectResumed = Disconnect{Code: ClosePolicyViolation, Reason: "resumed elsewhere", Resumable: true,
		Task: Error{CodeInterrupted, "the session was resumed on another connection before the task finished"}}
)

// Ended by a failure:
var (
	// DisconnectInstanceLost: the instance died or became unreachable.
	DisconnectInstanceLost = Disconnect{Code: CloseNormal, Reason: "instance lost",
		Task: Error{CodeInstanceLost, "the instance was lost"}, Event: EventInstanceLost}
	// DisconnectNoCapacity: no instance became free (wait=false, or the
	// queue timeout passed).
	DisconnectNoCapacity = Disconnect{Code: CloseTryAgainLater, Reason: "no capacity",
		Task: Error{CodeNoCapacity, "no instance is free"}}
	// DisconnectUnavailable: the shared state cannot be reached, so no
	// session can be placed.
	DisconnectUnavailable = Disconnect{Code: CloseTryAgainLater, Reason: "unavailable",
		Task: Error{CodeUnavailable, "sessions cannot be placed right now"}}
	// DisconnectInternal: an error of the manager; the details are logged.
	DisconnectInternal = Disconnect{Code: CloseInternalError, Reason: "internal error",
		Task: Error{CodeInternal, "internal error"}}
)

// Refused at connect, or closed for a bad frame. Each case has its own
// entry, though several share a close code:
var (
	// DisconnectBadOptions: the connect options could not be parsed, or
	// the pool cannot serve this kind of session.
	DisconnectBadOptions = Disconnect{Code: ClosePolicyViolation, Reason: "bad connect options",
		Task: Error{CodeBadRequest, "bad connect options"}}
	// DisconnectUnknownPool: the pool asked for is not configured.
	DisconnectUnknownPool = Disconnect{Code: ClosePolicyViolation, Reason: "unknown pool",
		Task: Error{CodeNotFound, "unknown pool"}}
	// DisconnectUnknownToken: nothing to resume for the token.
	DisconnectUnknownToken = Disconnect{Code: ClosePolicyViolation, Reason: "unknown resume token",
		Task: Error{CodeNotFound, "no resumable session for this token"}}
	// DisconnectRejected: a connect hook refused the session.
	DisconnectRejected = Disconnect{Code: ClosePolicyViolation, Reason: "rejected",
		Task: Error{CodeRejected, "the session was refused"}}
	// DisconnectProtocolError: a frame broke RFC 6455. The connection is
	// closed, the session kept for the resume grace window.
	DisconnectProtocolError = Disconnect{Code: CloseProtocolError, Reason: "protocol error", Resumable: true,
		Task: Error{CodeInterrupted, interruptedByCloseMsg}}
	// DisconnectBinaryFrame: clients send text frames only.
	DisconnectBinaryFrame = Disconnect{Code: CloseUnsupportedData, Reason: "binary frames are not accepted",
		Task: Error{CodeBadRequest, "binary frames are not accepted"}}
	// DisconnectInvalidUTF8: a text frame was not valid UTF-8.
	DisconnectInvalidUTF8 = Disconnect{Code: CloseInvalidPayload, Reason: "invalid UTF-8",
		Task: Error{CodeBadRequest, "a frame was not valid UTF-8"}}
	// DisconnectMessageTooBig: a message over the size limit.
	DisconnectMessageTooBig = Disconnect{Code: CloseMessageTooBig, Reason: "message too big",
		Task: Error{CodeBadRequest, "a message was larger than the limit"}}
)

// Disconnects is the table, in the order of docs/protocol.md.
var Disconnects = []Disconnect{
	DisconnectLogout, DisconnectClientClosed, DisconnectResumeExpired, DisconnectDroppedQueued,
	DisconnectStreamEnded, DisconnectIdleTimeout, DisconnectMaxLifetime, DisconnectFarmDrained, DisconnectEnded,
	DisconnectShutdown, DisconnectRestart, DisconnectResumed, DisconnectInstanceLost,
	DisconnectNoCapacity, DisconnectUnavailable, DisconnectInternal, DisconnectBadOptions,
	DisconnectUnknownPool, DisconnectUnknownToken, DisconnectRejected, DisconnectProtocolError,
	DisconnectBinaryFrame, DisconnectInvalidUTF8, DisconnectMessageTooBig,
}

// CloseReason is Reason cut to what a close frame can carry.
func (d Disconnect) CloseReason() string {
	r := d.Reason
	if len(r) > closeReasonMax {
		r = r[:closeReasonMax]
	}
	return r
}

// TaskError is the error a task in flight gets, a new value each call.
func (d Disconnect) TaskError() *Error {
	e := d.Task
	if e.Code == "" {
		e = Error{CodeInterrupted, interruptedByCloseMsg}
	}
	return &e
}

// String is for logs: the reason and the close code.
func (d Disconnect) String() string {
	if d.Code == 0 {
		return d.Reason
	}
	return d.Reason + " (" + strconv.Itoa(d.Code) + ")"
}
