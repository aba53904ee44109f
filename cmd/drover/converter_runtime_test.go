package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	convertpkg "github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/internal/app"
	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/internal/testkit/dockertest"
)

// TestConversionDockerRuntime converts through a farm whose converters
// run in containers (--converter-runtime docker) of the fake converter's
// image, with a memory limit: a model ends SUCCESS with the converter's
// GLB; one whose converter needs more memory ends ERROR - Conversion Error
// saying so; no converter container is left.
func TestConversionDockerRuntime(t *testing.T) {
	cli := dockertest.Client(t)
	image := convtest.Image(t, cli)
	dir := t.TempDir()
	config := filepath.Join(dir, "farm.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `converters:
  - ext: .fake
    argv: [%[1]q, "{in}", "{out}"]
  - ext: .hog
    argv: [%[1]q, "-alloc", "512MiB", "{in}", "{out}"]
`, convtest.ImagePath), 0o644))

	m := startManager(t, "--data", filepath.Join(dir, "data"), "--max-attempts", "1")
	farmID := "farm-docker-" + fmt.Sprint(time.Now().UnixNano())
	startFarm(t, m, farmID, 1, "--job-slots", "2", "--job-dir", filepath.Join(dir, "jobs"), "--config", config,
		"--converter-runtime", "docker", "--converter-image", image, "--converter-memory", "64MiB",
		"--converter-cpus", "1", "--converter-timeout", "1m")

	ok := uploadFile(t, m.base, `{"conversionCommandLine":["--output_glb"]}`, "part.fake", []byte("anything"))
	hog := uploadFile(t, m.base, `{"conversionCommandLine":["--output_glb"]}`, "big.hog", []byte("anything"))
	final := func(id string) itemData {
		var data itemData
		require.Eventually(t, func() bool {
			getJSON(t, "http://"+m.base+"/api/data/"+id, "", &data)
			return data.ConversionState != "PENDING"
		}, time.Minute, 50*time.Millisecond)
		return data
	}
	data := final(ok)
	require.Equal(t, "SUCCESS", data.ConversionState, data.DetailedError)
	require.Equal(t, []string{"part.fake.glb"}, data.Files)
	glb := filepath.Join(dir, "part.fake.glb")
	download(t, "http://"+m.base+"/api/file/"+ok+"/glb", glb)
	info, err := convertpkg.InspectGLBFile(glb)
	require.NoError(t, err)
	require.Equal(t, []string{"fake"}, info.Nodes, "the fake converter's GLB")

	data = final(hog)
	require.Equal(t, "ERROR - Conversion Error", data.ConversionState)
	require.Equal(t, "converter exceeded its memory limit of 64 MiB", data.DetailedError)

	require.Empty(t, dockertest.Containers(t, cli, convertpkg.LabelConverter, farmID), "converter containers left")
}

// download writes what a GET of url answers to path.
func download(t *testing.T, url, path string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

// TestConverterRuntimeConfig reads the converter runtime's settings from a
// config file, the environment and flags, for farm and up alike.
func TestConverterRuntimeConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drover.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`converter_runtime: docker
converter_image: drover-converters:1
converter_memory: 2GiB
converter_cpu_time: 5m
`), 0o600))
	t.Setenv("DROVER_CONVERTER_CPUS", "1.5")
	want := app.ConverterRuntimeConfig{ConverterRuntime: "docker", ConverterImage: "drover-converters:1",
		ConverterMemory: "2GiB", ConverterCPUTime: 5 * time.Minute, ConverterCPUs: 1.5, ConverterTimeout: 90 * time.Second}

	farmCmd := newFarmCmd()
	require.NoError(t, farmCmd.Flags().Set("config", path))
	require.NoError(t, farmCmd.Flags().Set("converter-timeout", "90s"))
	var fc app.FarmConfig
	_, err := load(farmCmd.Flags(), &fc)
	require.NoError(t, err)
	require.Equal(t, want, fc.ConverterRuntimeConfig)

	upCmd := newUpCmd()
	require.NoError(t, upCmd.Flags().Set("config", path))
	require.NoError(t, upCmd.Flags().Set("converter-timeout", "90s"))
	var uc app.UpConfig
	_, err = load(upCmd.Flags(), &uc)
	require.NoError(t, err)
	require.Equal(t, want, uc.ConverterRuntimeConfig)
}
