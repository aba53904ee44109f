package middleware

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/session"
)

func taskAs(p *auth.Principal, data string) *session.Task {
	t := newTask(data)
	if p != nil {
		auth.SetSession(t.Session, p)
	}
	return t
}

func TestRoleFilter(t *testing.T) {
	var (
		admin   = &auth.Principal{User: "root", Roles: []string{auth.RoleAdmin}}
		editor  = &auth.Principal{User: "ed", Roles: []string{"editor", "viewer"}}
		viewer  = &auth.Principal{User: "vi", Roles: []string{"viewer"}}
		nobody  = &auth.Principal{User: "no"}
		noPrinc *auth.Principal
	)
	rules := []RoleRule{
		{Roles: []string{auth.RoleAdmin}, Allow: []string{AnyCommand}},
		{Roles: []string{"editor"}, Deny: []string{"shutdown"}},
		{Roles: []string{"viewer"}, Allow: []string{"load", "render", "pick"}},
		{Deny: []string{AnyCommand}},
	}
	tests := []struct {
		name   string
		p      *auth.Principal
		data   string
		denied string // the command named in the refusal; "" if allowed
	}{
		{"admin anything", admin, `{"command":"shutdown"}`, ""},
		{"editor other", editor, `{"command":"save"}`, ""},
		{"editor denied", editor, `{"command":"shutdown"}`, `"shutdown"`},
		{"editor first rule wins over viewer", editor, `{"command":"render"}`, ""},
		{"viewer allowed", viewer, `{"command":"render"}`, ""},
		{"viewer not listed", viewer, `{"command":"save"}`, `"save"`},
		{"viewer frame all allowed", viewer, `[{"command":"load"},{"command":"pick"}]`, ""},
		{"viewer frame one not", viewer, `[{"command":"load"},{"command":"save"}]`, `"save"`},
		{"viewer no command", viewer, `{"x":1}`, "without a command"},
		{"viewer command not a string", viewer, `{"command":["render"]}`, "without a command"},
		{"viewer null data", viewer, `null`, "without a command"},
		{"viewer empty frame", viewer, `[]`, "without a command"},
		{"viewer escaped name", viewer, `{"comm\u0061nd":"save"}`, `"save"`},
		{"viewer last of two wins", viewer, `{"command":"render","command":"save"}`, `"save"`},
		{"viewer case differs: no command", viewer, `{"Command":"render"}`, "without a command"},
		{"no roles: catch-all", nobody, `{"command":"render"}`, `"render"`},
		{"no principal: catch-all", noPrinc, `{"command":"render"}`, `"render"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inst := &instance{}
			h := Chain{RoleFilter(rules...)}.Then(inst)
			var rec recorder
			err := h.ServeTask(context.Background(), taskAs(tc.p, tc.data), &rec)
			if tc.denied == "" {
				require.NoError(t, err)
				require.Len(t, inst.tasks, 1)
				return
			}
			var se *session.Error
			require.ErrorAs(t, err, &se)
			require.Equal(t, session.CodeForbidden, se.Code)
			require.Contains(t, se.Message, tc.denied)
			require.Contains(t, se.Message, "not allowed for your role")
			require.Empty(t, inst.tasks, "a refused task never reaches the instance")
			require.Empty(t, rec.results)
		})
	}
}

func TestRoleFilterNoMatchAllows(t *testing.T) {
	inst := &instance{}
	h := Chain{RoleFilter(RoleRule{Roles: []string{"viewer"}, Allow: []string{"load"}})}.Then(inst)
	for _, p := range []*auth.Principal{nil, {User: "x", Roles: []string{"editor"}}} {
		require.NoError(t, h.ServeTask(context.Background(), taskAs(p, `{"command":"save"}`), &recorder{}))
	}
	require.Len(t, inst.tasks, 2)
}

func TestRoleFilterOnField(t *testing.T) {
	inst := &instance{}
	h := Chain{RoleFilterOn("op", RoleRule{Deny: []string{"drop"}})}.Then(inst)
	require.NoError(t, h.ServeTask(context.Background(), taskAs(nil, `{"command":"drop","op":"read"}`), &recorder{}))
	err := h.ServeTask(context.Background(), taskAs(nil, `{"command":"read","op":"drop"}`), &recorder{})
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Equal(t, session.CodeForbidden, se.Code)
}

func TestRoleFilterRefusalBounded(t *testing.T) {
	long := strings.Repeat("é", 100)
	err := Chain{RoleFilter(RoleRule{Deny: []string{AnyCommand}})}.Then(&instance{}).
		ServeTask(context.Background(), taskAs(nil, `{"command":"`+long+`"}`), &recorder{})
	var se *session.Error
	require.ErrorAs(t, err, &se)
	require.Less(t, len(se.Message), 150)
	require.True(t, utf8.ValidString(se.Message))
}

// FuzzCommands: any data gives at least one command, never panics, and
// agrees with encoding/json on an object's command.
func FuzzCommands(f *testing.F) {
	for _, s := range []string{`{"command":"echo"}`, `[{"command":"a"},{"command":"b"}]`, `null`, `[]`, `"x"`,
		`{"command":1}`, `{"comm\u0061nd":"x","command":"y"}`, `[1,{"command":"z"}`, ` [ {"command" : "a"} ] `, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cs := Commands(data, DefaultCommandField)
		require.NotEmpty(t, cs)
		var m map[string]any
		if json.Unmarshal(data, &m) == nil {
			want, _ := m[DefaultCommandField].(string)
			require.Equal(t, []string{want}, cs)
		}
		for _, c := range cs {
			msg := refusal(c)
			require.True(t, utf8.ValidString(msg), "quoted, the message is UTF-8 whatever the command")
			require.LessOrEqual(t, len(msg), 64*4+60, "a long command is cut")
		}
	})
}
