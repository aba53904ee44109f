package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/session"
)

// DefaultCommandField is the member of a task's data that names its
// command: {"command":"echo"} for the reference worker, and each object of
// a ClassCAD frame.
const DefaultCommandField = "command"

// AnyCommand in an Allow or Deny list stands for every command.
const AnyCommand = "*"

// RoleRule says what principals holding one of Roles may run. Rules are
// tried in order and the first whose Roles the principal holds decides;
// a principal that no rule matches may run everything. Roles are matched
// as the principal lists them: an admin matches a rule only if the rule
// names RoleAdmin (or no role).
type RoleRule struct {
	// Roles the rule applies to; empty: every session, including one
	// without a principal.
	Roles []string
	// Allow, when not empty, lists the only commands the rule lets run.
	Allow []string
	// Deny lists commands the rule refuses, even if Allow lists them.
	Deny []string
}

// allows reports whether the rule lets command run.
func (r *RoleRule) allows(command string) bool {
	if slices.Contains(r.Deny, AnyCommand) || slices.Contains(r.Deny, command) {
		return false
	}
	return len(r.Allow) == 0 || slices.Contains(r.Allow, AnyCommand) || slices.Contains(r.Allow, command)
}

// matches reports whether the rule applies to p.
func (r *RoleRule) matches(p *auth.Principal) bool {
	if len(r.Roles) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, role := range r.Roles {
		if slices.Contains(p.Roles, role) {
			return true
		}
	}
	return false
}

// RoleFilter lets a task through only if the first rule matching its
// session's principal (auth.SessionPrincipal) allows its command, the
// DefaultCommandField of its data; see RoleFilterOn.
func RoleFilter(rules ...RoleRule) Middleware { return RoleFilterOn(DefaultCommandField, rules...) }

// RoleFilterOn is RoleFilter reading the command from the member field
// of the task's data. Data that is an array (a frame of commands) needs
// every command allowed. A task whose data names no command (not an
// object, no such member, not a string) counts as the command "", which
// only an Allow of AnyCommand or "" lets through, and a Deny of
// AnyCommand refuses. A refused task is answered forbidden, with the
// command named, and never reaches the instance; the session goes on.
//
// Put it first in the chain: a task that an earlier middleware makes
// without a session is judged as the session's own.
func RoleFilterOn(field string, rules ...RoleRule) Middleware {
	rules = slices.Clone(rules)
	return Func(func(ctx context.Context, t *session.Task, w session.ResultWriter, next Handler) error {
		p := auth.SessionPrincipal(t.Session)
		var rule *RoleRule
		for i := range rules {
			if rules[i].matches(p) {
				rule = &rules[i]
				break
			}
		}
		if rule == nil {
			return next.ServeTask(ctx, t, w)
		}
		for _, c := range Commands(t.Data, field) {
			if !rule.allows(c) {
				return session.NewError(session.CodeForbidden, refusal(c))
			}
		}
		return next.ServeTask(ctx, t, w)
	})
}

// maxCommandEcho bounds the command a refusal names.
const maxCommandEcho = 64

func refusal(command string) string {
	if command == "" {
		return "a task without a command is not allowed for your role"
	}
	if len(command) > maxCommandEcho {
		command = command[:maxCommandEcho]
		for !utf8.ValidString(command) {
			command = command[:len(command)-1]
		}
	}
	return "the command " + strconv.Quote(command) + " is not allowed for your role"
}

// Commands are the commands of task data: the string member field of an
// object, or of each object of an array; "" for data, or an element,
// without one. Member names are matched as encoding/json decodes them
// (escapes resolved; of a member given twice, the last), exactly, as the
// reference worker reads them.
func Commands(data []byte, field string) []string {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var elems []json.RawMessage
		if json.Unmarshal(data, &elems) != nil || len(elems) == 0 {
			return []string{""}
		}
		out := make([]string, len(elems))
		for i, e := range elems {
			out[i] = command(e, field)
		}
		return out
	}
	return []string{command(data, field)}
}

func command(data []byte, field string) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(data, &obj) != nil {
		return ""
	}
	var c string
	if json.Unmarshal(obj[field], &c) != nil {
		return ""
	}
	return c
}
