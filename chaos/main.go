// Command chaos is shoal's crash test (`make chaos`). It starts a NATS server and several
// replicas of every service as separate processes on loopback, runs an evolution, and kills
// random replicas with SIGKILL at random moments, restarting each after a short pause. When
// the run is done it checks, against the RESULTS stream, that every issued task has exactly one
// result (lost = 0, duplicates = 0), that the archive counted each once, that the GPU leases
// of killed generators were freed, and that every replica stops cleanly on SIGTERM.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

const (
	run      = "chaos"
	host     = "chaos-host"
	leaseTTL = 15 * time.Second // the generator's default LeaseTTL
)

type options struct {
	bin, example, workdir string
	kills                 int
	iterations            int64
	seed                  uint64
	timeout               time.Duration
	minGap, maxGap        time.Duration
	replicas              map[string]int
}

func main() {
	o := options{replicas: map[string]int{}}
	flag.StringVar(&o.bin, "bin", "bin", "folder holding shoal, planner, generator, evaluator, archive and nats-server")
	flag.StringVar(&o.example, "example", "examples/function_minimization", "problem to evolve (config.yaml is replaced by the harness's)")
	flag.StringVar(&o.workdir, "workdir", "", "where logs and NATS data go; default a new temp folder, kept")
	flag.IntVar(&o.kills, "kills", 50, "SIGKILLs to deliver while the run is going")
	flag.Int64Var(&o.iterations, "iterations", 800, "the run's max_iterations")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the kill schedule")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	flag.DurationVar(&o.minGap, "min-gap", 150*time.Millisecond, "shortest pause between kills")
	flag.DurationVar(&o.maxGap, "max-gap", 700*time.Millisecond, "longest pause between kills")
	reps := flag.String("replicas", "archive=2,planner=2,generator=3,evaluator=2", "replicas per service")
	flag.Parse()
	for _, kv := range strings.Split(*reps, ",") {
		name, n, ok := strings.Cut(kv, "=")
		count, err := strconv.Atoi(n)
		if !ok || err != nil || count < 1 {
			fmt.Fprintf(os.Stderr, "chaos: -replicas: %q is not service=count\n", kv)
			os.Exit(2)
		}
		o.replicas[name] = count
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := chaos(ctx, o)
	if s != nil {
		printSummary(*s, o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("chaos: PASS")
}

func chaos(ctx context.Context, o options) (*summary, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, b := range []string{"shoal", "planner", "generator", "evaluator", "archive", "nats-server"} {
		if _, err := os.Stat(filepath.Join(o.bin, b)); err != nil {
			return nil, fmt.Errorf("%w (run `make build` and build nats-server into %s)", err, o.bin)
		}
	}
	if o.workdir == "" {
		dir, err := os.MkdirTemp("", "shoal-chaos-")
		if err != nil {
			return nil, err
		}
		o.workdir = dir
	}
	if err := os.MkdirAll(o.workdir, 0o755); err != nil {
		return nil, err
	}
	fmt.Printf("chaos: logs and data in %s\n", o.workdir)
	bin := func(b string) string { p, _ := filepath.Abs(filepath.Join(o.bin, b)); return p }

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	// The server runs from the deployment's config file, with its users and permissions, and
	// each process logs in as its role, as it would in production.
	passwords, err := natsauth.LoadOrCreate(filepath.Join(o.workdir, "credentials"))
	if err != nil {
		return nil, err
	}
	var serverEnv []string
	for role, pw := range passwords {
		serverEnv = append(serverEnv, natsauth.PasswordEnv(role)+"="+pw)
	}
	server := &replica{service: "nats", name: "nats-server", bin: bin("nats-server"), logPath: filepath.Join(o.workdir, "nats-server.log"),
		args: []string{"-c", "deploy/nats/nats-server.conf", "-js", "-sd", filepath.Join(o.workdir, "jetstream"), "-a", "127.0.0.1", "-p", strconv.Itoa(port)},
		env:  serverEnv}
	if err := server.start(); err != nil {
		return nil, err
	}
	defer server.stop(10 * time.Second)
	nc, err := natsx.Connect(ctx, url, "shoal-chaos", log, nats.UserInfo(string(natsauth.Admin), passwords[natsauth.Admin]))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	names := protocol.NewNames("")
	if err := natsx.Reconcile(ctx, js, names); err != nil {
		return nil, err
	}

	// The fleet.
	standin, err := filepath.Abs("deploy/standin/server.py")
	if err != nil {
		return nil, err
	}
	// The launched stand-in is the generators' profile: a run config only names it.
	profilesPath := filepath.Join(o.workdir, "profiles.yaml")
	if err := os.WriteFile(profilesPath, []byte(profiles(standin)), 0o644); err != nil {
		return nil, err
	}
	var fleet []*replica
	for _, svc := range []string{"archive", "planner", "generator", "evaluator"} {
		for i := range o.replicas[svc] {
			r := &replica{service: svc, name: fmt.Sprintf("%s-%d", svc, i), bin: bin(svc),
				logPath: filepath.Join(o.workdir, fmt.Sprintf("%s-%d.log", svc, i)),
				env:     []string{"SHOAL_NATS_URL=" + url, "SHOAL_NATS_PASSWORD=" + passwords[natsauth.Role(svc)]}}
			if svc == "generator" {
				r.env = append(r.env, "SHOAL_GPUS=2x24GiB", "SHOAL_HOST="+host, "SHOAL_CONCURRENCY=8", "SHOAL_PROFILES="+profilesPath)
			}
			fleet = append(fleet, r)
		}
	}
	defer func() {
		for _, r := range fleet {
			r.kill()
		}
	}()
	for _, r := range fleet {
		if err := r.start(); err != nil {
			return nil, err
		}
	}

	// The run: the example's evaluator and program, with a config that uses both the mutate
	// backend and a launched model server on leased (declared) GPUs.
	cfgPath := filepath.Join(o.workdir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(runConfig(o.iterations)), 0o644); err != nil {
		return nil, err
	}
	seed := exec.CommandContext(ctx, bin("shoal"), "seed", "--nats-url", url, "--run", run, "--config", cfgPath,
		"--evaluator", filepath.Join(o.example, "evaluator.py"), "--program", filepath.Join(o.example, "initial_program.py"),
		"--user", string(natsauth.Seeder), "--password-file", natsauth.PasswordFile(filepath.Join(o.workdir, "credentials"), natsauth.Seeder))
	if out, err := seed.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("seed: %w: %s", err, out)
	}

	store, err := runs.Open(ctx, js, names)
	if err != nil {
		return nil, err
	}
	leases, err := js.KeyValue(ctx, names.GPULeasesBucket())
	if err != nil {
		return nil, err
	}

	s := &summary{Kills: map[string]int{}, MaxIteration: o.iterations, GracefulAll: len(fleet)}
	start := time.Now()
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0xc4a05))
	gap := func() time.Duration { return o.minGap + time.Duration(rng.Int64N(int64(o.maxGap-o.minGap)+1)) }
	nextKill := time.Now().Add(2 * time.Second) // let the seed be evaluated first
	restarts := map[*replica]time.Time{}
	killedHolders := map[string]bool{} // generator pids killed
	leaseHolders := map[string]bool{}  // generator pids seen holding a lease
	lastProgress := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var pst *protocol.PlannerState
	for {
		select {
		case <-ctx.Done():
			// Say what is stuck where, from a context of its own: ctx is spent.
			dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer dcancel()
			s.Wall = time.Since(start)
			if err := record(dctx, s, js, store, names); err != nil {
				fmt.Println("chaos: record:", err)
			}
			diagnose(dctx, js, names)
			return s, fmt.Errorf("run not done after %s: %w", o.timeout, ctx.Err())
		case <-tick.C:
		}
		now := time.Now()
		for _, r := range fleet {
			if at, waiting := restarts[r]; waiting {
				if now.After(at) {
					delete(restarts, r)
					if err := r.start(); err != nil {
						return s, err
					}
					s.Restarts++
				}
				continue
			}
			if err, crashed := r.crashedOnItsOwn(); crashed {
				s.Crashes++
				fmt.Printf("chaos: %s exited on its own (%v); restarting\n", r.name, err)
				r.forget()
				restarts[r] = now.Add(200 * time.Millisecond)
			}
		}
		pst, _ = store.Planner(ctx, run)
		done := pst != nil && pst.Status == protocol.RunDone
		// Kills stop at the target, so that the run's recovery (redelivery after AckWait,
		// lease expiry, standby takeover) is measured, not starved by endless kills.
		if !done && s.totalKills() < o.kills && now.After(nextKill) {
			r := fleet[rng.IntN(len(fleet))]
			if pid, ok := r.alive(); ok {
				r.kill()
				s.Kills[r.service]++
				if r.service == "generator" {
					killedHolders[strconv.Itoa(pid)] = true
				}
				restarts[r] = now.Add(time.Duration(rng.Int64N(int64(700 * time.Millisecond))))
			}
			nextKill = now.Add(gap())
		}
		if done {
			break // the run ended before the kills: the summary says so
		}
		if led, err := lease.Read(ctx, leases, host); err == nil {
			for _, a := range led.Live(now) {
				leaseHolders[holderPID(a.Holder)] = true
			}
		}
		if now.Sub(lastProgress) > 5*time.Second {
			lastProgress = now
			st, _ := store.State(ctx, run)
			var it int64
			if st != nil {
				it = st.Iterations
			}
			fmt.Printf("chaos: %5.0fs  iterations %d/%d  kills %d\n", time.Since(start).Seconds(), it, o.iterations, s.totalKills())
		}
	}
	s.Wall = time.Since(start)

	// Bring back whoever is down, then let killed generators' leases run out.
	for r := range restarts {
		if err := r.start(); err != nil {
			return s, err
		}
		s.Restarts++
	}
	for pid := range killedHolders {
		if leaseHolders[pid] {
			s.LeaseHolders++
		}
	}
	fmt.Printf("chaos: run done after %s; waiting %s for killed generators' leases to expire\n", s.Wall.Round(time.Second), leaseTTL+3*time.Second)
	select {
	case <-ctx.Done():
		return s, ctx.Err()
	case <-time.After(leaseTTL + 3*time.Second):
	}
	running := map[string]bool{}
	for _, r := range fleet {
		if pid, ok := r.alive(); ok && r.service == "generator" {
			running[strconv.Itoa(pid)] = true
		}
	}
	if led, err := lease.Read(ctx, leases, host); err == nil {
		s.StaleLeases = len(staleLeases(led.Live(time.Now()), func(holder string) bool { return running[holderPID(holder)] }))
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return s, fmt.Errorf("read lease ledger: %w", err)
	}

	if err := record(ctx, s, js, store, names); err != nil {
		return s, err
	}

	// Every replica must stop cleanly on SIGTERM.
	var stopErrs []string
	for _, r := range fleet {
		if err := r.stop(30 * time.Second); err != nil {
			stopErrs = append(stopErrs, err.Error())
		} else {
			s.GracefulOK++
		}
	}
	for _, e := range stopErrs {
		fmt.Println("chaos:", e)
	}
	if data, err := json.MarshalIndent(s, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(o.workdir, "summary.json"), data, 0o644)
	}
	if f := s.failures(o.kills); len(f) > 0 {
		return s, errors.New(strings.Join(f, "; "))
	}
	return s, nil
}

// record fills the summary from the runs bucket, RESULTS and DEAD.
func record(ctx context.Context, s *summary, js jetstream.JetStream, store *runs.Store, names protocol.Names) error {
	pst, err := store.Planner(ctx, run)
	if err != nil {
		return err
	}
	st, err := store.State(ctx, run)
	if err != nil {
		return err
	}
	s.RunStatus, s.Issued, s.Iterations, s.BestScore = pst.Status, pst.Issued, st.Iterations, st.BestScore
	results, err := readResults(ctx, js, names)
	if err != nil {
		return err
	}
	s.Tally = auditResults(run, pst.Issued, results)
	if info, err := js.Stream(ctx, names.DeadStream()); err == nil {
		s.DeadLetters = int(info.CachedInfo().State.Msgs)
	}
	return nil
}

// diagnose prints where work waits: each work stream's messages and its consumers' pending,
// unacknowledged and redelivered counts.
func diagnose(ctx context.Context, js jetstream.JetStream, names protocol.Names) {
	for _, name := range []string{names.TasksStream(), names.CandidatesStream(), names.SeedsStream()} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			fmt.Printf("chaos: stream %s: %v\n", name, err)
			continue
		}
		state := st.CachedInfo().State
		fmt.Printf("chaos: stream %s holds %d (seq %d..%d)\n", name, state.Msgs, state.FirstSeq, state.LastSeq)
		for ci := range st.ListConsumers(ctx).Info() {
			fmt.Printf("chaos:   consumer %s pending %d, unacked %d, redelivered %d, ack floor %d\n",
				ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.AckFloor.Stream)
		}
	}
}

// readResults returns every result of the run in stream order.
func readResults(ctx context.Context, js jetstream.JetStream, names protocol.Names) ([]protocol.Result, error) {
	cons, err := js.OrderedConsumer(ctx, names.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{names.Result(run)}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, err
	}
	var out []protocol.Result
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, err
		}
		n := 0
		var pending uint64
		for msg := range batch.Messages() {
			n++
			var r protocol.Result
			if err := protocol.Decode(msg.Data(), &r); err != nil {
				return nil, fmt.Errorf("undecodable result: %w", err)
			}
			out = append(out, r)
			if md, err := msg.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 || pending == 0 {
			return out, nil
		}
	}
}

// holderPID is the pid in a lease holder "generator-<host>-<pid>/<model>/<hash>".
func holderPID(holder string) string {
	replica, _, _ := strings.Cut(holder, "/")
	return replica[strings.LastIndex(replica, "-")+1:]
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func profiles(standin string) string {
	return fmt.Sprintf(`profiles:
  standin:
    command: ["python3", %q, "--port", "{port}", "--model-name", "{model}"]
    variants:
      - name: small
        need_gib: 16
`, standin)
}

func runConfig(iterations int64) string {
	return fmt.Sprintf(`max_iterations: %d
random_seed: 7
llm:
  models:
    - name: mutate
      backend: mutate
      concurrency: 6
      weight: 3
    - name: standin
      backend: launch
      concurrency: 2
      weight: 1
      launch: {profile: standin}
database:
  population_size: 200
  num_islands: 3
evaluator:
  timeout: 20
  cascade_evaluation: false
`, iterations)
}

func printSummary(s summary, o options) {
	kinds := make([]string, 0, len(s.Kills))
	for k := range s.Kills {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, s.Kills[k]))
	}
	fmt.Printf(`
chaos summary (seed %d, replicas %v)
  kills          %d (%s), restarts %d, exits on their own %d
  run            %s after %s; issued %d of budget %d; best score %.4f
  results        %d messages, %d distinct (%d seeds, %d generated); by status %v
  lost           %d
  duplicates     %d
  archive count  %d iterations (RESULTS: %d generated)
  dead letters   %d
  GPU leases     %d killed generators held leases; %d leases held by dead generators after %s
  SIGTERM        %d of %d replicas stopped cleanly
`, o.seed, o.replicas, s.totalKills(), strings.Join(parts, ", "), s.Restarts, s.Crashes,
		s.RunStatus, s.Wall.Round(time.Second), s.Issued, s.MaxIteration, s.BestScore,
		s.Tally.Messages, s.Tally.Results, s.Tally.Seeds, s.Tally.Generated, s.Tally.ByStatus,
		len(s.Tally.Lost), s.Tally.Duplicates, s.Iterations, s.Tally.Generated, s.DeadLetters,
		s.LeaseHolders, s.StaleLeases, leaseTTL+3*time.Second, s.GracefulOK, s.GracefulAll)
}
