package app

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReloadRunsEveryHookAndLogsEach(t *testing.T) {
	var buf bytes.Buffer
	r := reloads{log: slog.New(slog.NewTextHandler(&buf, nil))}
	var ran []string
	r.OnReload("one", func() error { ran = append(ran, "one"); return nil })
	r.OnReload("two", func() error { ran = append(ran, "two"); return errors.New("file /x: no PEM block") })
	r.OnReload("three", func() error { ran = append(ran, "three"); return nil })

	err := r.Reload()
	require.Equal(t, []string{"one", "two", "three"}, ran, "a failure does not stop the others")
	require.EqualError(t, err, "reload two: file /x: no PEM block")
	log := buf.String()
	require.Contains(t, log, `msg=reloaded what=one`)
	require.Contains(t, log, `level=ERROR msg="reload failed; keeping what was loaded before" what=two err="file /x: no PEM block"`)
	require.Contains(t, log, `msg=reloaded what=three`)

	var none reloads
	require.NoError(t, none.Reload(), "no hooks, no logger: nothing to do")
}
