package evaluator

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-run/shoal/services/evaluator/internal/sandbox"
)

// Recycling: a warm zygote is replaced when it died or was killed as hung (Run kills it),
// after maxJobs candidates, when it grew past maxRSS, or after idling for maxIdle.
const (
	defaultWarmJobs = 500
	defaultWarmRSS  = 4 << 30
	warmIdle        = 10 * time.Minute
)

// warmPool keeps one prepared zygote per evaluator (bundle and file). A zygote runs many
// candidates at once, each in its own forked child, so one per evaluator is enough.
type warmPool struct {
	launcher *sandbox.Launcher
	maxJobs  int
	maxRSS   int64
	log      *slog.Logger

	mu      sync.Mutex
	zygotes map[string]*warmZygote
	closed  bool
}

type warmZygote struct {
	z        *sandbox.Zygote
	users    int
	retired  bool
	lastUsed time.Time
	// starting is closed once z (or err) is set, so that concurrent first candidates start
	// one zygote between them.
	starting chan struct{}
	err      error
}

func newWarmPool(l *sandbox.Launcher, log *slog.Logger) *warmPool {
	return &warmPool{launcher: l, maxJobs: defaultWarmJobs, maxRSS: defaultWarmRSS, log: log, zygotes: map[string]*warmZygote{}}
}

var errPoolClosed = errors.New("evaluator is stopping")

// get returns the warm zygote for key, starting it with p when there is none, and a release
// to call when the candidate is done.
func (p *warmPool) get(ctx context.Context, key string, prep *sandbox.Prepare) (*sandbox.Zygote, func(), error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, nil, errPoolClosed
	}
	p.evictIdle()
	w := p.zygotes[key]
	if w == nil {
		w = &warmZygote{starting: make(chan struct{})}
		p.zygotes[key] = w
		w.users++
		p.mu.Unlock()
		z, err := p.launcher.Start(ctx, prep)
		p.mu.Lock()
		w.z, w.err = z, err
		p.mu.Unlock()
		close(w.starting)
		if err != nil {
			p.mu.Lock()
			w.users--
			if p.zygotes[key] == w {
				delete(p.zygotes, key)
			}
			p.mu.Unlock()
			return nil, nil, err
		}
		p.log.Info("warm interpreter started", "evaluator", key, "zygote", z.PID())
	} else {
		w.users++
		p.mu.Unlock()
		<-w.starting
		if w.err != nil {
			p.mu.Lock()
			w.users--
			p.mu.Unlock()
			return nil, nil, w.err
		}
	}
	return w.z, func() { p.release(key, w) }, nil
}

// release hands a zygote back and retires it when it misbehaved or served its share.
func (p *warmPool) release(key string, w *warmZygote) {
	p.mu.Lock()
	w.users--
	w.lastUsed = time.Now()
	if !w.retired {
		why := ""
		switch {
		case w.z.Dead():
			why = "died"
		case w.z.Jobs() >= p.maxJobs:
			why = "served its candidates"
		case p.maxRSS > 0 && w.z.RSS() > p.maxRSS:
			why = "grew too big"
		}
		if why != "" {
			w.retired = true
			if p.zygotes[key] == w {
				delete(p.zygotes, key)
			}
			p.log.Info("warm interpreter recycled", "zygote", w.z.PID(), "why", why, "jobs", w.z.Jobs())
		}
	}
	closeNow := w.retired && w.users == 0
	p.mu.Unlock()
	if closeNow {
		_ = w.z.Close()
	}
}

// evictIdle retires zygotes unused for warmIdle (a run that ended); p.mu is held.
func (p *warmPool) evictIdle() {
	for key, w := range p.zygotes {
		if w.users == 0 && w.z != nil && !w.lastUsed.IsZero() && time.Since(w.lastUsed) > warmIdle {
			delete(p.zygotes, key)
			w.retired = true
			go w.z.Close()
		}
	}
}

// close stops every zygote; candidates still running on one fail with ErrZygoteDied.
func (p *warmPool) close() {
	p.mu.Lock()
	p.closed = true
	var zs []*sandbox.Zygote
	for key, w := range p.zygotes {
		delete(p.zygotes, key)
		if w.z != nil {
			zs = append(zs, w.z)
		}
	}
	p.mu.Unlock()
	for _, z := range zs {
		_ = z.Close()
	}
}
