package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/gpu/modelfile"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// Endpoint is where a model answers, and the name it answers to.
type Endpoint struct {
	APIBase string
	APIKey  string
	Model   string
}

// launched is one model server and the state tasks wait on.
type launched struct {
	key     string
	model   runconfig.Model
	profile runconfig.Profile
	holder  string
	log     *slog.Logger

	mu      sync.Mutex
	cur     *attempt // the start that tasks wait for now
	users   int      // tasks waiting for the server or sending it requests
	lastUse time.Time
	retired bool
	// claiming: the server waits in the lease queue, so its tasks may be better served by
	// another replica whose server of the model is up.
	claiming bool
}

// attempt is one start of the server: pending until it is healthy (ep) or has failed (err).
type attempt struct {
	done chan struct{}
	ep   Endpoint
	err  error
}

func (s *launched) setClaiming(v bool) {
	s.mu.Lock()
	s.claiming = v
	s.mu.Unlock()
}

func (s *launched) isClaiming() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claiming
}

func newAttempt() *attempt { return &attempt{done: make(chan struct{})} }

// endpoint waits until the current start of the server has an outcome: an endpoint to send
// the task to, or the reason it failed, which rejects the task. The task calls done when it
// no longer uses the server.
//
// While the server waits in the lease queue, elsewhere is asked every handBackCheck whether
// another replica on the host serves the model now; if so the task is handed back
// (ErrHandBack) for that replica to take, rather than held for as long as the queue lasts.
func (s *launched) endpoint(ctx context.Context, draining <-chan struct{}, elsewhere func(context.Context) bool) (ep Endpoint, done func(), err error) {
	s.mu.Lock()
	a := s.cur
	s.users++
	s.mu.Unlock()
	done = func() {
		s.mu.Lock()
		s.users--
		s.lastUse = time.Now()
		s.mu.Unlock()
	}
	check := time.NewTicker(handBackCheck)
	defer check.Stop()
	for {
		select {
		case <-a.done:
			return a.ep, done, a.err
		case <-ctx.Done():
			return Endpoint{}, done, ctx.Err()
		case <-draining:
			return Endpoint{}, done, ErrStopping
		case <-check.C:
			if s.isClaiming() && elsewhere != nil && elsewhere(ctx) {
				return Endpoint{}, done, ErrHandBack
			}
		}
	}
}

// retireIfIdle retires the server when no task has used it for idle: tasks that still hold it
// are handed back, and it must stop.
func (s *launched) retireIfIdle(idle time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.users > 0 || time.Since(s.lastUse) < idle {
		return false
	}
	s.retired = true
	a := newAttempt()
	a.err = ErrStopping
	close(a.done)
	s.cur = a
	return true
}

// settle gives the current start its outcome, releasing the tasks waiting for it.
func (s *launched) settle(ep Endpoint, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.cur.done:
	default:
		s.cur.ep, s.cur.err = ep, err
		close(s.cur.done)
	}
}

// next makes tasks from now on wait for the next start, once the current one is settled.
func (s *launched) next() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.cur.done:
		if !s.retired {
			s.cur = newAttempt()
		}
	default:
	}
}

// fail settles the current start with err and, unless the failure is final, makes the tasks
// that come next wait for another start.
func (s *launched) fail(err error, final bool) {
	s.log.Warn("launch failed", "err", err, "final", final)
	s.settle(Endpoint{}, err)
	if !final {
		s.next()
	}
}

// supervise keeps the server running on a lease until ctx ends or it has been idle too long:
// it claims the lease, (re)starts the server, claims again after a loss, and at the end stops
// the server and releases the lease.
func (s *launched) supervise(ctx context.Context, kv jetstream.KeyValue, b *Backend) {
	defer s.settle(Endpoint{}, ErrStopping)
	variants, err := gpuVariants(s.model.Name, s.profile)
	if err != nil {
		s.fail(fmt.Errorf("launch: %w", err), true)
		return
	}
	inv := b.cfg.Inventory
	client, err := lease.New(kv, lease.Config{
		Host: inv.Host, Holder: s.holder, Model: s.model.Name, TTL: b.cfg.LeaseTTL, Log: s.log,
		Replicas: func() int { return b.replicas(inv.Host, s.model.Name) },
	})
	if err != nil {
		s.fail(fmt.Errorf("launch: %w", err), true)
		return
	}
	defer client.Close()

	var (
		held      *lease.Lease
		endLease  context.CancelFunc
		delay     = firstRestartDelay
		backedOff = func() bool {
			ok := sleep(ctx, delay)
			delay = min(delay*2, maxRestartDelay)
			return ok
		}
	)
	release := func() {
		if held == nil {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseLimit)
		defer cancel()
		if err := held.Release(rctx); err != nil {
			s.log.Warn("gpu lease release failed; it expires on its own", "err", err)
		}
		endLease()
		held, endLease = nil, nil
	}
	defer release()

	for ctx.Err() == nil && !b.retire(s) {
		if held == nil {
			s.setClaiming(true)
			start := time.Now()
			held, endLease, err = claim(ctx, client, inv, variants)
			b.recordClaim(s.model.Name, time.Since(start), err)
			s.setClaiming(false)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, lease.ErrNeverFits):
				s.fail(fmt.Errorf("launch: %w", err), true)
				return
			case err != nil:
				s.fail(fmt.Errorf("launch: %w", err), false)
				if !backedOff() {
					return
				}
				continue
			}
		}
		up, err := s.runServer(ctx, held, func() bool { return b.retire(s) })
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errIdle):
			s.log.Info("server stopped: no task used it for a while", "idle", b.cfg.Idle)
			return
		case isLost(held):
			// Fenced: the server is already dead; its GPUs may be someone else's by now.
			s.log.Warn("gpu lease lost; server killed, claiming again", "err", err)
			s.next()
			release()
			if !sleep(ctx, firstRestartDelay) {
				return
			}
			continue
		case up == 0:
			s.fail(err, false)
		default:
			s.log.Warn("server exited; restarting", "err", err, "up", up.Round(time.Millisecond))
			s.next()
			if up >= stableAfter {
				delay = firstRestartDelay
			}
		}
		if !backedOff() {
			return
		}
	}
}

// claim waits for a lease. The lease's renewals run under a context of their own, which
// outlives ctx so that the lease holds while the server stops; endLease ends it after the
// release.
func claim(ctx context.Context, client *lease.Client, inv gpu.Inventory, variants []gpu.Variant) (*lease.Lease, context.CancelFunc, error) {
	leaseCtx, endLease := context.WithCancel(context.WithoutCancel(ctx))
	stopWaiting := context.AfterFunc(ctx, endLease)
	l, err := client.Claim(leaseCtx, inv, variants)
	stopWaiting()
	if err != nil {
		endLease()
		return nil, nil, err
	}
	return l, endLease, nil
}

func isLost(l *lease.Lease) bool {
	select {
	case <-l.Lost():
		return true
	default:
		return false
	}
}

// runServer starts the server on l's GPUs, makes it the endpoint once healthy, and returns
// when it is gone: exited (err says how), killed because the lease was lost, or stopped
// because ctx ended. up is how long it was healthy; 0 means it never was, and err is then
// the reason tasks waiting for it are rejected.
func (s *launched) runServer(ctx context.Context, l *lease.Lease, retire func() bool) (up time.Duration, err error) {
	lc := s.profile
	variant, _ := lc.Variant(l.Variant().Name)
	port, err := freePort()
	if err != nil {
		return 0, fmt.Errorf("launch: pick a port: %w", err)
	}
	gpus := l.CUDAVisibleDevices()
	argv := substitute(lc.Command, map[string]string{
		"port":    strconv.Itoa(port),
		"gpus":    gpus,
		"n_gpus":  strconv.Itoa(len(l.Shares())),
		"model":   s.model.ServedName(variant),
		"variant": variant.Name,
	})
	env := os.Environ()
	for _, k := range slices.Sorted(maps.Keys(lc.Env)) {
		env = append(env, k+"="+lc.Env[k])
	}
	env = append(env, "CUDA_VISIBLE_DEVICES="+gpus)
	p, err := startProcess(argv, env, s.log)
	if err != nil {
		return 0, fmt.Errorf("launch: start %s: %w", argv[0], err)
	}
	log := s.log.With("pid", p.pgid, "port", port, "gpu", gpus, "variant", variant.Name)
	log.Info("server started", "command", strings.Join(argv, " "))

	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitHealthy(ctx, base+lc.HealthPath, lc.StartupTimeout, p, l.Lost()); err != nil {
		if ctx.Err() != nil {
			p.stop(stopGrace)
		} else {
			p.kill()
		}
		return 0, err
	}
	if err := l.Ready(ctx); err != nil {
		p.kill()
		return 0, fmt.Errorf("launch: mark the gpu lease ready: %w", err)
	}
	healthy := time.Now()
	s.settle(Endpoint{APIBase: base + "/v1", Model: s.model.ServedName(variant)}, nil)
	log.Info("server ready", "startup", healthy.Sub(p.started).Round(time.Millisecond))

	idle := time.NewTicker(idleCheck)
	defer idle.Stop()
	for {
		select {
		case <-p.exited:
			p.kill() // workers left behind
			return time.Since(healthy), fmt.Errorf("launch: server exited: %s", p.exitReason())
		case <-l.Lost():
			p.kill()
			return time.Since(healthy), lease.ErrLost
		case <-ctx.Done():
			p.stop(stopGrace)
			log.Info("server stopped")
			return time.Since(healthy), ctx.Err()
		case <-idle.C:
			if retire() {
				p.stop(stopGrace)
				return time.Since(healthy), errIdle
			}
		}
	}
}

// waitHealthy polls url until it answers 200. It gives up when the server exits (with its
// last words), when the lease is lost, or after timeout.
func waitHealthy(ctx context.Context, url string, timeout time.Duration, p *process, lost <-chan struct{}) error {
	client := &http.Client{Timeout: healthProbe, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	wait := 50 * time.Millisecond
	for {
		last := probe(ctx, client, url)
		if last == nil {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-p.exited:
			t.Stop()
			return fmt.Errorf("launch: server exited during startup: %s", p.exitReason())
		case <-lost:
			t.Stop()
			return fmt.Errorf("launch: server startup: %w", lease.ErrLost)
		case <-deadline.C:
			t.Stop()
			return fmt.Errorf("launch: server not healthy within startup_timeout %s: GET %s: %v", timeout, url, last)
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, time.Second)
	}
}

func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// freePort asks the kernel for a free port on the loopback interface. Another process may
// take it before the server binds it; the server then fails to start and is started again
// on another port.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// substitute replaces the placeholders ({port}, {gpus}, …) in every argument.
func substitute(command []string, values map[string]string) []string {
	pairs := make([]string, 0, 2*len(values))
	for k, v := range values {
		pairs = append(pairs, "{"+k+"}", v)
	}
	r := strings.NewReplacer(pairs...)
	out := make([]string, len(command))
	for i, arg := range command {
		out[i] = r.Replace(arg)
	}
	return out
}

// gpuVariants turns the profile's variants into what placement takes, estimating the need of
// a variant that declares none from its model file.
func gpuVariants(model string, p runconfig.Profile) ([]gpu.Variant, error) {
	if len(p.Variants) == 0 {
		return nil, fmt.Errorf("model %q: profile %q has no variants", model, p.Name)
	}
	out := make([]gpu.Variant, 0, len(p.Variants))
	for _, v := range p.Variants {
		need := gpu.MiB(v.NeedMiB)
		if need <= 0 {
			n, err := modelfile.EstimateNeed(v.ModelPath, v.ContextLength, modelfile.NeedOptions{})
			if err != nil {
				return nil, fmt.Errorf("variant %q: %w; declare need_gib in the launch profile instead", v.Name, err)
			}
			need = n.WeightsMiB + n.KVCacheMiB
		}
		out = append(out, gpu.Variant{
			Name:              v.Name,
			NeedMiB:           need,
			PerGPUOverheadMiB: gpu.MiB(v.PerGPUOverheadMiB),
			GroupSizes:        slices.Clone(v.GroupSizes),
		})
	}
	return out, nil
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
