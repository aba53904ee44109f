package convert

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseCommandLine(t *testing.T) {
	t.Parallel()
	def := DefaultOptions()
	with := func(f func(o *Options)) Options {
		o := DefaultOptions()
		o.Outputs = append([]OutputSpec(nil), o.Outputs...)
		f(&o)
		return o
	}
	tests := []struct {
		name string
		args []string
		want Options
	}{
		{"nil", nil, def},
		{"empty", []string{}, def},
		{"star alone", []string{"*"}, def},
		{"replaces the defaults", []string{"--output_png", "--output_stl", "--background_color", "1,1,1"},
			with(func(o *Options) { o.Outputs = []OutputSpec{{Type: TypePNG}, {Type: TypeSTL}} })},
		{"star adds", []string{"*", "--output_stl"},
			with(func(o *Options) { o.Outputs = append(o.Outputs, OutputSpec{Type: TypeSTL}) })},
		{"star names a default", []string{"*", "--output_png", "thumb.png"},
			with(func(o *Options) { o.Outputs[1].Name = "thumb.png" })},
		{"output names", []string{"--output_glb", "model.glb", "--output_obj", "mesh.obj"},
			with(func(o *Options) { o.Outputs = []OutputSpec{{TypeGLB, "model.glb"}, {TypeOBJ, "mesh.obj"}} })},
		{"empty output name is the default", []string{"--output_glb", ""},
			with(func(o *Options) { o.Outputs = []OutputSpec{{Type: TypeGLB}} })},
		{"equals form", []string{"--output_png=t.png", "--background_color=0,0.5,1", "--output_png_resolution=320x200"},
			with(func(o *Options) {
				o.Outputs = []OutputSpec{{TypePNG, "t.png"}}
				o.Background = [3]float64{0, 0.5, 1}
				o.Width, o.Height = 320, 200
			})},
		{"transparent", []string{"*", "--png_transparent_background", "True"},
			with(func(o *Options) { o.Transparent = true })},
		{"not transparent", []string{"*", "--png_transparent_background", "0"}, def},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseCommandLine(tt.args)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			again, err := ParseCommandLine(got.CommandLine())
			require.NoError(t, err)
			require.Equal(t, got, again)
		})
	}
}

func TestParseCommandLineRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no outputs", []string{"--background_color", "1,1,1"}, "asks for no output"},
		{"unknown flag", []string{"--output_glb", "--frobnicate", "1"}, "unknown flag --frobnicate"},
		{"hoops only", []string{"--output_scs"}, "--output_scs needs the HOOPS Converter"},
		{"shattered", []string{"--prepare_shattered_parts"}, "processShattered argument"},
		{"input is server-chosen", []string{"--output_glb", "--input", "/etc/passwd"}, "--input needs the HOOPS Converter"},
		{"not a flag", []string{"output_glb"}, "is not a flag"},
		{"star later", []string{"--output_glb", "a.glb", "*"}, `"*" is not a flag`},
		{"value without flag", []string{"--output_glb", "a.glb", "b.glb"}, `"b.glb" is not a flag`},
		{"twice", []string{"--output_glb", "--output_glb"}, "given twice"},
		{"missing value", []string{"--output_glb", "--background_color"}, "needs a value"},
		{"missing value before flag", []string{"--background_color", "--output_glb"}, "needs a value"},
		{"colour range", []string{"*", "--background_color", "1,2,1"}, "each from 0 to 1"},
		{"colour parts", []string{"*", "--background_color", "1,1"}, "want R,G,B"},
		{"colour NaN", []string{"*", "--background_color", "NaN,0,0"}, "each from 0 to 1"},
		{"resolution form", []string{"*", "--output_png_resolution", "640,480"}, "WIDTHxHEIGHT"},
		{"resolution big", []string{"*", "--output_png_resolution", "10000x10"}, "WIDTHxHEIGHT"},
		{"bool", []string{"*", "--png_transparent_background", "yes"}, "true or false"},
		{"name with slash", []string{"--output_glb", "sub/x.glb"}, "not a plain file name"},
		{"name hidden", []string{"--output_glb", ".x.glb"}, "starts with a dot or a dash"},
		{"name control", []string{"--output_glb", "a\nb"}, "control character"},
		{"obj name", []string{"--output_obj", "mesh.txt"}, "must end in .obj"},
		{"long", []string{"--output_glb", strings.Repeat("a", 300)}, "longer than"},
		{"many", append([]string{"*"}, strings.Split(strings.Repeat("--output_glb,", 70), ",")...), "more than 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseCommandLine(tt.args)
			require.ErrorIs(t, err, ErrCommandLine)
			require.ErrorContains(t, err, tt.want)
		})
	}
}

// FuzzParseCommandLine checks that whatever a user sends, the parser either
// refuses it with ErrCommandLine or returns options within bounds, whose
// canonical command line parses back to the same options. The input is
// the arguments joined by NUL.
func FuzzParseCommandLine(f *testing.F) {
	for _, args := range [][]string{
		{"--output_png", "--output_stl", "--background_color", "1,1,1"},
		{"*", "--output_obj", "mesh.obj"},
		{"--output_glb=m.glb", "--output_png_resolution", "320x200", "--png_transparent_background", "1"},
		{"--output_scs", "x.scs"},
		{"--output_glb", "", "--background_color", "0.1,0.2,0.3"},
	} {
		f.Add(strings.Join(args, "\x00"))
	}
	f.Fuzz(func(t *testing.T, in string) {
		args := strings.Split(in, "\x00")
		o, err := ParseCommandLine(args)
		if err != nil {
			require.ErrorIs(t, err, ErrCommandLine)
			return
		}
		require.NotEmpty(t, o.Outputs)
		types := map[string]bool{}
		for _, s := range o.Outputs {
			require.Contains(t, []string{TypeGLB, TypePNG, TypeSTL, TypeOBJ}, s.Type)
			require.False(t, types[s.Type], "type %s twice", s.Type)
			types[s.Type] = true
			if s.Name != "" {
				require.NoError(t, checkOutputName(s.Name))
			}
		}
		require.GreaterOrEqual(t, o.Width, minResolution)
		require.LessOrEqual(t, o.Width, maxResolution)
		require.GreaterOrEqual(t, o.Height, minResolution)
		require.LessOrEqual(t, o.Height, maxResolution)
		for _, c := range o.Background {
			require.True(t, c >= 0 && c <= 1, "background %v", o.Background)
		}
		again, err := ParseCommandLine(o.CommandLine())
		require.NoError(t, err)
		require.Equal(t, o, again)
		_, err = outputNames(o, "item.step")
		if err != nil {
			require.ErrorIs(t, err, ErrCommandLine)
		}
	})
}
