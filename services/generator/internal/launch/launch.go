// Package launch is the generator's launch backend: it claims GPU leases on this host, starts
// the model servers of operator-declared profiles on the leased GPUs (CUDA_VISIBLE_DEVICES
// set to the lease's UUIDs), waits for them to be healthy, supervises them (restart on crash,
// kill on a lost lease, stop when idle) and, on shutdown, stops them and releases the leases.
// The generator asks the servers as it asks any OpenAI-compatible endpoint.
package launch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// Backend launches the model servers of BackendLaunch models. For each model it claims a GPU
// lease on this host, starts the model's server on the leased GPUs, and gives the model's
// tasks the server's endpoint, which the generator then asks as it asks any OpenAI-compatible
// endpoint. A supervisor per server restarts it when it exits, kills it the moment its lease
// is lost (fencing), stops it when no task has used it for a while, and on shutdown stops it
// and releases the lease.
//
// Runs whose configs launch a model the same way share its server, so that a second run of
// the same search does not wait for GPUs that an idle server of the first still holds. The
// servers outlive the tasks that start them: their lifetime is the context of run, which
// the stop function of Start ends; the generator calls it only after the last task has
// drained.
type Backend struct {
	cfg Config
	log *slog.Logger

	starts    chan *launched // new servers, for run to supervise
	draining  chan struct{}  // closed when the replica takes no more tasks
	drainOnce sync.Once

	// peers counts the live replicas of a host serving a model (the generators registry);
	// the lease client chooses the variant that fits all of them.
	peers func(host, model string) int

	mu      sync.Mutex
	servers map[string]*launched // by serverKey
	leases  jetstream.KeyValue   // the GPU lease bucket, once start has opened it
	// claimWait is shoal.gpu.lease.wait.duration once Observe has made it; nil: not measured.
	claimWait metric.Float64Histogram
}

// Config is what the launch backend takes from the generator replica's Config.
type Config struct {
	// Replica is the replica's id; a server's lease holder is <replica>/<model>/<config>.
	Replica string
	// LeaseTTL is how long a GPU lease outlives its holder's last renewal.
	LeaseTTL time.Duration
	// Idle is how long a server that no task uses keeps its GPUs.
	Idle time.Duration
	// Inventory is this host's GPUs.
	Inventory gpu.Inventory
	// NoGPUs says why this replica cannot launch models; "" when it can.
	NoGPUs string
	// Profiles are the model servers this host's operator allows; a run config only names
	// one.
	Profiles runconfig.Profiles
}

// Timing of the supervisor.
const (
	stopGrace         = 10 * time.Second // from SIGTERM to SIGKILL
	firstRestartDelay = time.Second
	maxRestartDelay   = time.Minute
	// stableAfter is how long a server must stay healthy for its next crash to be restarted
	// at once again, rather than after a longer backoff.
	stableAfter  = time.Minute
	healthProbe  = 2 * time.Second // timeout of one health request
	idleCheck    = time.Second     // how often a healthy server checks whether it is idle
	releaseLimit = 5 * time.Second // time to release a lease after shutdown
	// handBackCheck is how often a task waiting on a queued claim looks for a replica that
	// serves its model already.
	handBackCheck = 2 * time.Second
)

// replicas is how many replicas of model run on host, at least this one.
func (b *Backend) replicas(host, model string) int {
	if b.peers == nil {
		return 1
	}
	return max(b.peers(host, model), 1)
}

// New prepares the launch backend; Start publishes the host's GPUs and supervises the servers.
func New(cfg Config, log *slog.Logger) *Backend {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Backend{
		cfg:      cfg,
		log:      log,
		starts:   make(chan *launched),
		draining: make(chan struct{}),
		servers:  map[string]*launched{},
	}
}

// Endpoint waits until model m's server (started on first use, for run) is healthy and
// returns where it answers; a task calls done once it no longer sends the server requests,
// whatever the error. An error rejects the task, except ErrStopping and ErrHandBack: the task
// then goes back for another replica.
func (b *Backend) Endpoint(ctx context.Context, run string, m runconfig.Model) (ep Endpoint, done func(), err error) {
	done = func() {}
	p, err := b.cfg.Profiles.Lookup(m)
	if err != nil {
		return Endpoint{}, done, fmt.Errorf("launch: %w", err)
	}
	if b.cfg.NoGPUs != "" {
		return Endpoint{}, done, errors.New("launch: " + b.cfg.NoGPUs)
	}
	s, err := b.server(run, m, p)
	if err != nil {
		return Endpoint{}, done, err
	}
	return s.endpoint(ctx, b.draining, func(ctx context.Context) bool { return b.servedElsewhere(ctx, m.Name, s.holder) })
}

// Start publishes the host's GPUs and supervises the servers that tasks ask for until stop
// is called. When ctx ends, tasks still waiting for a server are handed back at once; the
// servers themselves keep serving the tasks in flight until stop. peers counts the live
// replicas of a host that serve a model (nil: this one alone); the lease client chooses the
// variant that fits all of them.
func (b *Backend) Start(ctx context.Context, js jetstream.JetStream, names protocol.Names, peers func(host, model string) int) (stop func(), err error) {
	if b.cfg.NoGPUs != "" {
		return func() {}, nil
	}
	b.peers = peers
	if err := publishInventory(ctx, js, names.GPUInventoryBucket(), b.cfg.Inventory); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, names.GPULeasesBucket())
	if err != nil {
		return nil, fmt.Errorf("gpu lease bucket: %w", err)
	}
	b.mu.Lock()
	b.leases = kv
	b.mu.Unlock()
	b.log.Info("gpus ready for launched models", "host", b.cfg.Inventory.Host, "gpus", len(b.cfg.Inventory.GPUs), "source", b.cfg.Inventory.Source)
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.run(life, kv)
	}()
	stopDrain := context.AfterFunc(ctx, b.drain)
	return func() {
		stopDrain()
		b.drain()
		cancel()
		<-done
	}, nil
}

// run supervises every server started until ctx ends, then waits for them to stop.
func (b *Backend) run(ctx context.Context, kv jetstream.KeyValue) {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer b.drain()
	for {
		select {
		case s := <-b.starts:
			wg.Go(func() { s.supervise(ctx, kv, b) })
		case <-ctx.Done():
			return
		}
	}
}

// servedElsewhere reports whether another holder on this host has a ready server of model.
func (b *Backend) servedElsewhere(ctx context.Context, model, holder string) bool {
	b.mu.Lock()
	kv := b.leases
	b.mu.Unlock()
	if kv == nil {
		return false
	}
	led, err := lease.Read(ctx, kv, b.cfg.Inventory.Host)
	if err != nil {
		return false
	}
	for _, a := range led.Live(time.Now()) {
		if a.Model == model && a.State == gpu.LeaseReady && a.Holder != holder {
			return true
		}
	}
	return false
}

func (b *Backend) drain() { b.drainOnce.Do(func() { close(b.draining) }) }

// server returns the server that launches model m with profile p, starting its supervisor on
// first use.
func (b *Backend) server(run string, m runconfig.Model, p runconfig.Profile) (*launched, error) {
	key := serverKey(m, p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if s, ok := b.servers[key]; ok {
		return s, nil
	}
	name := m.Name + "/" + key[len(key)-8:]
	s := &launched{
		key:     key,
		model:   m,
		profile: p,
		holder:  b.cfg.Replica + "/" + name,
		log:     b.log.With("model", m.Name, "server", name, "started_by", run),
		cur:     newAttempt(),
		lastUse: time.Now(),
	}
	select {
	case b.starts <- s:
	case <-b.draining:
		return nil, ErrStopping
	}
	b.servers[key] = s
	return s, nil
}

// retire forgets s if no task has used it for the idle time, so that the next task starts a
// new server; it reports whether s is to stop.
func (b *Backend) retire(s *launched) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !s.retireIfIdle(b.cfg.Idle) {
		return false
	}
	delete(b.servers, s.key)
	return true
}

// serverKey identifies how a model is launched: its name and its profile, so that runs that
// launch it the same way share one server.
func serverKey(m runconfig.Model, p runconfig.Profile) string {
	data, _ := json.Marshal(struct {
		Name    string
		Profile runconfig.Profile
	}{m.Name, p}) // plain data always encodes
	sum := sha256.Sum256(data)
	return m.Name + "\x00" + hex.EncodeToString(sum[:])
}

// publishInventory writes the host's GPUs to the gpu-inventory bucket, under the host's key
// in the lease ledger, for `shoal leases` and the UI.
func publishInventory(ctx context.Context, js jetstream.JetStream, bucket string, inv gpu.Inventory) error {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("gpu inventory bucket: %w", err)
	}
	data, err := json.Marshal(inv)
	if err != nil {
		return fmt.Errorf("encode gpu inventory: %w", err)
	}
	if _, err := kv.Put(ctx, lease.Key(inv.Host), data); err != nil {
		return fmt.Errorf("publish gpu inventory of %s: %w", inv.Host, err)
	}
	return nil
}
