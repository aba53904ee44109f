package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFarmCacheReconversionIsAHit runs a manager and a farm with a model
// cache as real processes: the first conversion of an item downloads its
// input, its reconversion is a cache hit, and so is one after the farm
// restarted on the same cache directory.
func TestFarmCacheReconversionIsAHit(t *testing.T) {
	dir := t.TempDir()
	glb := triangleGLB(t, dir)
	config := filepath.Join(dir, "farm.yaml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `converters:
  - ext: .fast
    argv: ["sh", "-c", "cp %s \"$1\"", "sh", "{out}"]
`, glb), 0o644))

	m := startManager(t)
	cacheDir, stateDir := filepath.Join(dir, "cache"), filepath.Join(dir, "state")
	farmArgs := []string{"--job-slots", "1", "--config", config, "--cache-size", "1", "--cache-dir", cacheDir,
		"--state-dir", stateDir}
	f := startFarm(t, m, "farm-c", 1, farmArgs...)

	id := uploadFile(t, m.base, `{"conversionCommandLine":["--output_glb"]}`, "part.fast", []byte("a model of 24 bytes....."))
	waitItem(t, m, id)
	requireCache(t, f, 0, 1)

	reconvert(t, m, id)
	waitItem(t, m, id)
	requireCache(t, f, 1, 1)

	// A restarted farm finds its cache again.
	require.NoError(t, f.cmd.Process.Signal(os.Interrupt))
	require.NoError(t, f.wait(t, 20*time.Second))
	f = startFarm(t, m, "farm-c", 1, farmArgs...)
	reconvert(t, m, id)
	waitItem(t, m, id)
	requireCache(t, f, 1, 0)
	var st struct {
		Cache struct {
			MaxBytes  int64 `json:"max_bytes"`
			UsedBytes int64 `json:"used_bytes"`
			Entries   int   `json:"entries"`
			Hits      int   `json:"hits"`
		} `json:"cache"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+f.base+"/api/v1/status", farmToken, &st))
	require.EqualValues(t, 1<<20, st.Cache.MaxBytes)
	require.EqualValues(t, 24, st.Cache.UsedBytes)
	require.Equal(t, 1, st.Cache.Entries)
	require.Equal(t, 1, st.Cache.Hits)
}

func reconvert(t *testing.T, m *droverProc, id string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+m.base+"/api/reconvert/"+id, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

// waitItem waits until item id is no longer PENDING, and requires SUCCESS.
func waitItem(t *testing.T, m *droverProc, id string) {
	t.Helper()
	var data itemData
	require.Eventually(t, func() bool {
		getJSON(t, "http://"+m.base+"/api/data/"+id, "", &data)
		return data.ConversionState != "PENDING"
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "SUCCESS", data.ConversionState, data.DetailedError)
}

// requireCache checks the farm's cache counters in its /metrics.
func requireCache(t *testing.T, f *droverProc, hits, misses int) {
	t.Helper()
	got := farmMetrics(t, f)
	require.Equal(t, float64(hits), got["drover_farm_cache_hits_total"], "hits")
	require.Equal(t, float64(misses), got["drover_farm_cache_misses_total"], "misses")
}

// farmMetrics reads a farm's unlabelled metrics.
func farmMetrics(t *testing.T, f *droverProc) map[string]float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+f.base+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+farmToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err == nil {
			out[name] = v
		}
	}
	return out
}

// TestFarmCacheConfig: the cache's settings come from the config file and
// the environment like every flag's; 0 turns the cache off, and a second
// farm on a cache directory in use is refused with a clear message.
func TestFarmCacheConfig(t *testing.T) {
	t.Parallel()
	m := startManager(t)
	dir := t.TempDir()
	cacheDir := filepath.Join(dir, "models")
	cfg := filepath.Join(dir, "farm.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, "cache_size: 3\ncache_dir: %s\n", cacheDir), 0o600))
	f := startFarm(t, m, "farm-cache-cfg", 1, "--config", cfg)
	var st struct {
		Cache *struct {
			MaxBytes int64 `json:"max_bytes"`
		} `json:"cache"`
	}
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+f.base+"/api/v1/status", farmToken, &st))
	require.NotNil(t, st.Cache)
	require.EqualValues(t, 3<<20, st.Cache.MaxBytes, "from the file")
	require.FileExists(t, filepath.Join(cacheDir, ".lock"))
	require.InDelta(t, 3<<20, farmMetrics(t, f)["drover_farm_cache_capacity_bytes"], 0)

	// Another farm on the same directory.
	other := startDrover(t, "farm-2", nil, nil, "farm", "--manager", "http://"+m.base, "--token", farmToken,
		"--addr", "127.0.0.1:0", "--id", "farm-cache-2", "--state-dir", t.TempDir(), "--cache-dir", cacheDir)
	require.Error(t, other.wait(t, 20*time.Second))
	require.Contains(t, other.out.String(), "the cache directory is in use by another process: "+cacheDir)
	require.Contains(t, other.out.String(), "give each farm its own --cache-dir")

	off := startDrover(t, "farm-off", []string{"DROVER_CACHE_SIZE=0"}, farmBanner, "farm", "--manager",
		"http://"+m.base, "--token", farmToken, "--addr", "127.0.0.1:0", "--id", "farm-cache-off",
		"--state-dir", t.TempDir())
	st.Cache = nil
	require.Equal(t, http.StatusOK, getJSON(t, "http://"+off.base+"/api/v1/status", farmToken, &st))
	require.Nil(t, st.Cache, "DROVER_CACHE_SIZE=0: no cache")
	_, ok := farmMetrics(t, off)["drover_farm_cache_capacity_bytes"]
	require.False(t, ok)
}
