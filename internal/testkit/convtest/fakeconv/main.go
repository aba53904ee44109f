// Command fakeconv is a stand-in converter for drover's tests of converter
// runtimes and limits: static, so it runs in a FROM scratch image, and
// told by its flags what to do, in this order:
//
//	fakeconv [-record FILE] [-cgroup FILE] [-alloc BYTES [-virtual]] [-spin DURATION]
//	         [-sleep DURATION] [-stderr TEXT] [-exit CODE] [IN] OUT
//
// -record appends a line to FILE (the converter's side effect a test can
// count); -cgroup copies the memory limit of the cgroup it runs in to FILE;
// -alloc allocates and touches that many bytes and keeps them (-virtual:
// allocates without touching, taking address space but no memory); -spin burns
// CPU for that long (0: until killed); -sleep sleeps; -stderr prints TEXT on
// stderr; -exit exits with CODE (after -stderr) when it is not 0. Else it
// reads IN, when given, and writes a valid GLB holding one triangle to OUT.
// It is not used by drover itself.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	record := flag.String("record", "", "append a line to this file")
	cgroup := flag.String("cgroup", "", "copy the cgroup's memory limit to this file")
	alloc := flag.String("alloc", "", "allocate and touch this many bytes (1048576, 64MiB)")
	virtual := flag.Bool("virtual", false, "with -alloc: do not touch the memory, only take the address space")
	spin := flag.String("spin", "", "burn CPU this long (0: until killed)")
	sleep := flag.Duration("sleep", 0, "sleep this long")
	stderr := flag.String("stderr", "", "print this on stderr")
	exit := flag.Int("exit", 0, "exit with this code")
	flag.Parse()

	if *record != "" {
		f, err := os.OpenFile(*record, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		check(err)
		_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
		check(err)
		check(f.Close())
	}
	if *cgroup != "" {
		check(os.WriteFile(*cgroup, []byte(memoryLimit()), 0o600))
	}
	var keep [][]byte
	if *alloc != "" {
		n, err := parseSize(*alloc)
		check(err)
		// In chunks, each touched, so the pages are really used.
		for n > 0 {
			c := make([]byte, min(n, 16<<20))
			for i := 0; i < len(c) && !*virtual; i += 4096 {
				c[i] = 1
			}
			keep = append(keep, c)
			n -= int64(len(c))
		}
		fmt.Printf("allocated %s\n", *alloc)
	}
	if *spin != "" {
		d, err := time.ParseDuration(*spin)
		check(err)
		end := time.Now().Add(d)
		x := 0
		for d == 0 || time.Now().Before(end) {
			for i := range 1 << 20 {
				x += i
			}
		}
		fmt.Println(x)
	}
	time.Sleep(*sleep)
	if *stderr != "" {
		fmt.Fprintln(os.Stderr, *stderr)
	}
	if *exit != 0 {
		os.Exit(*exit)
	}
	args := flag.Args()
	if len(args) == 0 || len(args) > 2 {
		fmt.Fprintln(os.Stderr, "usage: fakeconv [flags] [IN] OUT")
		os.Exit(2)
	}
	if len(args) == 2 {
		_, err := os.ReadFile(args[0])
		check(err)
	}
	check(os.WriteFile(args[len(args)-1], glb(), 0o644))
	_ = keep
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "fakeconv:", err)
		os.Exit(1)
	}
}

// parseSize reads a byte count: a number with an optional KiB, MiB or GiB.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = n, m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// memoryLimit is the memory limit of the cgroup the program runs in, as the
// kernel writes it: cgroup v2's memory.max, or v1's limit_in_bytes.
func memoryLimit() string {
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		if b, err := os.ReadFile(p); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return "unknown"
}

// glb is a GLB of one triangle, with a node named "fake".
func glb() []byte {
	bin := make([]byte, 0, 36)
	for _, v := range []float32{0, 0, 0, 1, 0, 0, 0, 1, 0} {
		bin = binary.LittleEndian.AppendUint32(bin, math.Float32bits(v))
	}
	js := []byte(`{"asset":{"version":"2.0","generator":"fakeconv"},"scene":0,"scenes":[{"nodes":[0]}],` +
		`"nodes":[{"name":"fake","mesh":0}],"meshes":[{"primitives":[{"attributes":{"POSITION":0}}]}],` +
		`"accessors":[{"bufferView":0,"componentType":5126,"count":3,"type":"VEC3","min":[0,0,0],"max":[1,1,0]}],` +
		`"bufferViews":[{"buffer":0,"byteLength":36}],"buffers":[{"byteLength":36}]}`)
	for len(js)%4 != 0 {
		js = append(js, ' ')
	}
	le := binary.LittleEndian
	out := le.AppendUint32(nil, 0x46546c67)
	out = le.AppendUint32(out, 2)
	out = le.AppendUint32(out, uint32(12+8+len(js)+8+len(bin)))
	out = le.AppendUint32(out, uint32(len(js)))
	out = le.AppendUint32(out, 0x4e4f534a)
	out = append(out, js...)
	out = le.AppendUint32(out, uint32(len(bin)))
	out = le.AppendUint32(out, 0x004e4942)
	return append(out, bin...)
}
