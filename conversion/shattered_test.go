package conversion_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farmapi"
)

// TestShatteredOutputs: a job carries processShattered to the farm; the
// attempt's outputs under shattered/ become the item's Shattered list, not
// its files; names that would leave that directory are refused, at upload
// and at download; a reconversion drops the parts.
func TestShatteredOutputs(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{ProcessShattered: true}, "asm.step", strings.NewReader("step"))
	require.NoError(t, err)
	j := lease(t, f.svc, "farm")
	require.True(t, j.ProcessShattered)

	for _, bad := range []string{"shattered/../item.json", "shattered/a/b.glb", "shattered/", "shattered/.hidden",
		`shattered/a\b.glb`, "../x", "a/b"} {
		_, err := f.svc.PutJobOutput(ctx, j.ID, j.Token, bad, strings.NewReader("x"))
		require.ErrorIs(t, err, farmapi.ErrBadJobRequest, bad)
	}
	outs := []farmapi.JobOutput{}
	for name, body := range map[string]string{"asm.step.glb": "model", "shattered/Bolt.glb": "bolt",
		"shattered/Nut.glb": "nut", "shattered/index.xml": "<ShatteredAssembly/>"} {
		n, err := f.svc.PutJobOutput(ctx, j.ID, j.Token, name, strings.NewReader(body))
		require.NoError(t, err)
		typ := "glb"
		if strings.HasSuffix(name, ".xml") {
			typ = "xml"
		}
		outs = append(outs, farmapi.JobOutput{Name: name, Type: typ, Size: n})
	}
	_, err = f.svc.CompleteJob(ctx, j.ID, farmapi.CompleteRequest{Token: j.Token, Attempt: j.Attempt, Outputs: outs})
	require.NoError(t, err)
	it = waitState(t, f.svc, it.ID)
	require.Equal(t, items.StateSuccess, it.State)
	require.Len(t, it.Files, 1)
	require.Equal(t, "asm.step.glb", it.Files[0].Name)
	require.ElementsMatch(t, []items.File{{Name: "Bolt.glb", Type: "glb", Size: 4}, {Name: "Nut.glb", Type: "glb", Size: 3},
		{Name: "index.xml", Type: "xml", Size: 20}}, it.Shattered)

	read := func(obj io.ReadCloser, err error) string {
		t.Helper()
		require.NoError(t, err)
		defer obj.Close()
		b, err := io.ReadAll(obj)
		require.NoError(t, err)
		return string(b)
	}
	obj, _, err := f.svc.OpenShattered(ctx, it.ID, "Bolt.glb")
	require.Equal(t, "bolt", read(obj, err))
	obj, _, err = f.svc.OpenShatteredIndex(ctx, it.ID)
	require.Equal(t, "<ShatteredAssembly/>", read(obj, err))
	for _, bad := range []string{"../item.json", "..", ".", "a/b", `..\item.json`, "/etc/passwd", "", "x\x00"} {
		_, _, err := f.svc.OpenShattered(ctx, it.ID, bad)
		require.ErrorIs(t, err, conversion.ErrInvalid, bad)
	}
	_, _, err = f.svc.OpenShattered(ctx, it.ID, "asm.step.glb")
	require.ErrorIs(t, err, conversion.ErrNotFound, "an output is no part")
	_, _, err = f.svc.OpenOutputByName(ctx, it.ID, "shattered/Bolt.glb")
	require.ErrorIs(t, err, conversion.ErrNotFound, "a part is no output")

	off := false
	it, err = f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{ProcessShattered: &off})
	require.NoError(t, err)
	require.Empty(t, it.Shattered)
	require.False(t, lease(t, f.svc, "farm").ProcessShattered)
	_, _, err = f.svc.OpenShatteredIndex(ctx, it.ID)
	require.ErrorIs(t, err, conversion.ErrNotFound)
}
