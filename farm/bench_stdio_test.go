package farm

import (
	"context"
	"log/slog"
	"os/exec"
	"testing"
)

// BenchmarkStdioStartStop is the farm's share of a stdio session that needs
// a new process: start an instance of a line program, stop it, with the
// state file kept, from 8 goroutines at once as drover bench's openers do.
func BenchmarkStdioStartStop(b *testing.B) {
	sed, err := exec.LookPath("sed")
	if err != nil {
		b.Fatal(err)
	}
	p := PoolSpec{Name: "lines", Command: sed, Args: []string{"-u", "a ."}, Protocol: ProtocolStdio, Delimiter: "."}
	f := newTestFarm(b, Config{Slots: 8, StateDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler), Pools: []PoolSpec{p}})
	ctx := context.Background()
	b.SetParallelism(4) // 8 on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			inst, err := f.StartInstance(ctx, "lines")
			if err != nil {
				b.Error(err)
				return
			}
			if err := f.StopInstance(ctx, inst.ID); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
