package generator

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/program"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/telemetry"
	"github.com/shoal-run/shoal/services/generator/internal/mutate"
	"github.com/shoal-run/shoal/services/generator/internal/openai"
)

// mutateBackend needs no model: it mutates the parent with the task's seed, so a redelivered
// task yields the same candidate.
type mutateBackend struct{}

func (mutateBackend) generate(_ context.Context, task *protocol.Task, _ runconfig.Model) (string, string, protocol.TokenUsage, error) {
	in := mutate.Input{Parent: task.Parent.Code, Language: task.Language, Seed: task.Seed}
	for _, p := range task.Inspirations {
		in.Inspirations = append(in.Inspirations, mutate.Inspiration{ID: p.ID, Code: p.Code})
	}
	code, summary, err := mutate.Mutate(in)
	return code, summary, protocol.TokenUsage{}, err
}

// openaiBackend asks an OpenAI-compatible endpoint with the task's prompt and applies the
// reply to the parent: SEARCH/REPLACE blocks in diff mode, a whole program in rewrite mode.
type openaiBackend struct {
	http   *http.Client
	getenv func(string) string
}

func (b openaiBackend) generate(ctx context.Context, task *protocol.Task, m runconfig.Model) (string, string, protocol.TokenUsage, error) {
	return b.complete(ctx, task, m, endpoint{apiBase: m.APIBase, apiKey: m.ResolveAPIKey(b.getenv), model: m.Name})
}

// endpoint is where a model answers, and the name it answers to.
type endpoint struct {
	apiBase string
	apiKey  string
	model   string
}

// complete asks the model at ep with m's request settings.
func (b openaiBackend) complete(ctx context.Context, task *protocol.Task, m runconfig.Model, ep endpoint) (string, string, protocol.TokenUsage, error) {
	var tokens protocol.TokenUsage
	if len(task.Messages) == 0 {
		return "", "", tokens, errors.New("task has no prompt messages for the model")
	}
	client, err := openai.New(openai.Config{
		APIBase:     ep.apiBase,
		APIKey:      ep.apiKey,
		Model:       ep.model,
		Temperature: m.Temperature,
		TopP:        m.TopP,
		MaxTokens:   m.MaxTokens,
		Timeout:     m.Timeout,
		Retries:     m.Retries,
		RetryDelay:  m.RetryDelay,
		HTTPClient:  b.http,
	})
	if err != nil {
		return "", "", tokens, fmt.Errorf("model %q: %w", m.Name, err)
	}
	reply, err := client.Complete(ctx, task.Messages, task.Seed)
	if err != nil {
		return "", "", tokens, fmt.Errorf("model error: %w", err)
	}
	tokens = protocol.TokenUsage{Prompt: reply.Usage.PromptTokens, Completion: reply.Usage.CompletionTokens}
	if span := trace.SpanFromContext(ctx); span.IsRecording() { // the model call's (Service.call)
		span.SetAttributes(telemetry.Retries.Int(reply.Attempts-1), attribute.String("gen_ai.response.model", ep.model),
			telemetry.GenAIResponseFinish.StringSlice([]string{reply.FinishReason}))
	}
	_, span := telemetry.Start(ctx, "apply "+string(task.Mode), trace.WithAttributes(attribute.String("shoal.mode", string(task.Mode)), attribute.Int("shoal.reply_bytes", len(reply.Text))))
	code, summary, err := apply(task, reply.Text)
	if err != nil && reply.FinishReason == "length" {
		err = fmt.Errorf("%w (the reply was cut off at max_tokens %d)", err, m.MaxTokens)
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "the reply did not apply")
	} else if span.IsRecording() {
		span.SetAttributes(attribute.String("shoal.changes", summary))
	}
	span.End()
	return code, summary, tokens, err
}

// apply turns a model's reply into the parent's child, all or nothing.
func apply(task *protocol.Task, reply string) (string, string, error) {
	if task.Mode == protocol.ModeRewrite {
		rewrite, err := program.ExtractRewrite(reply, task.Language)
		if err != nil {
			return "", "", fmt.Errorf("rewrite reply: %w", err)
		}
		code, summary, err := program.ApplyRewrite(task.Parent.Code, rewrite)
		if err != nil {
			return "", "", fmt.Errorf("rewrite reply: %w", err)
		}
		return code, summary, nil
	}
	blocks, err := program.ParseDiff(reply)
	if err != nil {
		return "", "", fmt.Errorf("diff reply: %w", err)
	}
	code, summary, err := program.ApplyDiff(task.Parent.Code, blocks)
	if err != nil {
		return "", "", fmt.Errorf("diff reply: %w", err)
	}
	return code, summary, nil
}
