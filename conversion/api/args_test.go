package api_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/api"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		want         api.Args
		err          bool
	}{
		{name: "empty", header: "", want: api.Args{Has: map[string]bool{}}},
		{name: "demo upload", header: `{"startPath":"","webhook":null,"accessPassword":"x","hcVersion":null}`,
			want: api.Args{Has: map[string]bool{"startPath": true}}},
		{name: "everything", header: `{"webhook":"https://h/x","startPath":"a/b.step","conversionCommandLine":["--output_glb"],
			"processShattered":"true","skipConversion":1,"waitUntilConversionDone":true,"storageID":"abc","itemname":"n",
			"rootFile":"r.obj","itemids":["a","b"]}`,
			want: api.Args{Webhook: "https://h/x", StartPath: "a/b.step", CommandLine: []string{"--output_glb"},
				ProcessShattered: true, SkipConversion: true, WaitUntilConversionDone: true, ItemID: "abc", ItemName: "n",
				RootFile: "r.obj", ItemIDs: []string{"a", "b"},
				Has: map[string]bool{"webhook": true, "startPath": true, "conversionCommandLine": true, "processShattered": true,
					"skipConversion": true, "waitUntilConversionDone": true, "storageID": true, "itemname": true,
					"rootFile": true, "itemids": true}}},
		{name: "empty command line string", header: `{"conversionCommandLine":""}`,
			want: api.Args{CommandLine: []string{}, Has: map[string]bool{"conversionCommandLine": true}}},
		{name: "not JSON", header: `startPath=x`, err: true},
		{name: "array", header: `["x"]`, err: true},
		{name: "two values", header: `{} {}`, err: true},
		{name: "number for a string", header: `{"startPath":3}`, err: true},
		{name: "bad bool", header: `{"skipConversion":"maybe"}`, err: true},
		{name: "command line of numbers", header: `{"conversionCommandLine":[1,2]}`, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := api.ParseArgs(tc.header)
			if tc.err {
				require.ErrorIs(t, err, api.ErrBadArg)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func FuzzAPIArg(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"startPath":"a.step","webhook":"http://x/"}`,
		`{"conversionCommandLine":["--output_png","x.png"],"skipConversion":"true"}`, `{"itemids":["a"]}`,
		`{"waitUntilConversionDone":1}`, `null`, `{"a":`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		a, err := api.ParseArgs(header)
		if err != nil {
			require.ErrorIs(t, err, api.ErrBadArg)
			return
		}
		// Whatever parsed is plain data that marshals again.
		_, err = json.Marshal(a)
		require.NoError(t, err)
		require.NotNil(t, a.Has)
	})
}
