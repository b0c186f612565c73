package generator

import (
	"context"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/generator/internal/launch"
)

// launchBackend serves BackendLaunch models: internal/launch starts the model's server on
// leased GPUs of this host and supervises it; the task is then asked of that server as the
// openai backend asks any endpoint.
type launchBackend struct {
	servers *launch.Backend
	openai  openaiBackend
}

func (b launchBackend) generate(ctx context.Context, task *protocol.Task, m runconfig.Model) (string, string, protocol.TokenUsage, error) {
	ep, done, err := b.servers.Endpoint(ctx, task.Run, m)
	defer done()
	if err != nil {
		return "", "", protocol.TokenUsage{}, err
	}
	return b.openai.complete(ctx, task, m, endpoint{apiBase: ep.APIBase, apiKey: ep.APIKey, model: ep.Model})
}
