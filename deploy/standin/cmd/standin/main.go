// Command standin serves the stand-in model (package standin) on an address: a benchmark
// tool for measuring how well a client keeps a model server busy.
//
//	standin --addr 127.0.0.1:8000 --slots 64 --latency 200ms --tokens-per-sec 0
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/shoal-run/shoal/deploy/standin"
)

func main() {
	var cfg standin.Config
	addr := flag.String("addr", "127.0.0.1:8000", "address to listen on")
	flag.StringVar(&cfg.Model, "model", "standin", "model name /v1/models lists")
	flag.IntVar(&cfg.Slots, "slots", 64, "requests served at once; more wait in a queue")
	flag.DurationVar(&cfg.Latency, "latency", 0, "time before the first token of each request")
	flag.Float64Var(&cfg.TokensPerSec, "tokens-per-sec", 0, "decode rate of one slot (0: instant)")
	flag.IntVar(&cfg.ReplyTokens, "reply-tokens", 0, "pad replies to about this many tokens")
	flag.StringVar(&cfg.Mode, "mode", "perturb", "perturb: a Gaussian step on one numeric literal; noise: a wild jump")
	flag.Float64Var(&cfg.Step, "step", 0.1, "relative standard deviation of a perturbation")
	flag.Uint64Var(&cfg.Seed, "seed", 0, "seed of the replies")
	flag.IntVar(&cfg.Digits, "digits", 6, "significant digits a moved literal is written with (fewer: more duplicate edits)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("listen", "addr", *addr, "err", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: standin.New(cfg), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("standin listening", "addr", ln.Addr().String(), "slots", cfg.Slots, "latency", cfg.Latency.String(), "mode", cfg.Mode)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}
