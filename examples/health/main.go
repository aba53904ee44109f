// Command health embeds drover with a route of its own and its own health
// rule: /health answers 200 and the free slots while more than -reserve
// are free, else 429 with a reason, and /hello is the program's.
//
//	go run ./examples/health -addr 127.0.0.1:8181
//	curl -i 127.0.0.1:8181/health
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/manager"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8181", "listen address")
	reserve := flag.Int("reserve", 0, "free slots to keep: /health answers 429 at or below them")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *reserve); err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		stop()     // os.Exit skips the deferred stop
		os.Exit(1) //nolint:gocritic // stop ran on the line above
	}
}

func run(ctx context.Context, addr string, reserve int) error {
	srv, err := drover.New(drover.Config{
		Addr: addr,
		Farm: farm.Config{Slots: 2},
		Pools: []drover.Pool{{
			Pool:     manager.Pool{Name: "lines"},
			PoolSpec: farm.PoolSpec{Command: "/bin/cat", Protocol: farm.ProtocolStdio, IdleGap: 50 * time.Millisecond},
		}},
		Manager: manager.Config{
			// Only /health follows this rule; sessions are still placed
			// while slots are free.
			Health: func(c manager.Capacity) (int, any) {
				free := c.Slots - c.Busy
				if free <= reserve {
					return http.StatusTooManyRequests, gin.H{"free": free, "reason": "keeping slots in reserve"}
				}
				return http.StatusOK, gin.H{"free": free}
			},
		},
	})
	if err != nil {
		return err
	}
	srv.Manager().Router().GET("/hello", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"hello": c.DefaultQuery("name", "world")})
	})
	if err := srv.Start(); err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", srv.Addr())
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return srv.Stop(sctx)
}
