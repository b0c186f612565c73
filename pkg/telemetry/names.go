package telemetry

import "go.opentelemetry.io/otel/attribute"

// Attributes from OpenTelemetry's semantic conventions (messaging, gen_ai, error), written out
// because the semconv package of otel v1.47 has no gen_ai group, and shoal's own (shoal.*).
const (
	MessagingSystem          = attribute.Key("messaging.system")
	MessagingDestinationName = attribute.Key("messaging.destination.name")
	MessagingOperationType   = attribute.Key("messaging.operation.type")
	MessagingOperationName   = attribute.Key("messaging.operation.name")
	MessagingMessageID       = attribute.Key("messaging.message.id")
	MessagingConsumerGroup   = attribute.Key("messaging.consumer.group.name")
	MessagingDeliveryCount   = attribute.Key("messaging.message.delivery_count")

	GenAIOperationName   = attribute.Key("gen_ai.operation.name")
	GenAIProviderName    = attribute.Key("gen_ai.provider.name")
	GenAIRequestModel    = attribute.Key("gen_ai.request.model")
	GenAIUsageInput      = attribute.Key("gen_ai.usage.input_tokens")
	GenAIUsageOutput     = attribute.Key("gen_ai.usage.output_tokens")
	GenAITokenType       = attribute.Key("gen_ai.token.type")
	GenAIResponseFinish  = attribute.Key("gen_ai.response.finish_reasons")
	ErrorType            = attribute.Key("error.type")
	ServiceName          = attribute.Key("service.name")
	ServiceNamespace     = attribute.Key("service.namespace")
	ServiceVersion       = attribute.Key("service.version")
	ServiceInstanceID    = attribute.Key("service.instance.id")
	GenAIOperationChat   = "chat"
	MessagingSystemNATS  = "nats"
	MessagingOpSend      = "send"
	MessagingOpProcess   = "process"
	GenAITokenTypeInput  = "input"
	GenAITokenTypeOutput = "output"

	Run       = attribute.Key("shoal.run")
	Candidate = attribute.Key("shoal.candidate")
	Task      = attribute.Key("shoal.task")
	Island    = attribute.Key("shoal.island")
	Status    = attribute.Key("shoal.status")
	Stage     = attribute.Key("shoal.stage")
	Service   = attribute.Key("shoal.service")
	Limit     = attribute.Key("shoal.limit")
	Retries   = attribute.Key("shoal.retries")
	NewBest   = attribute.Key("shoal.new_best")
	NewCell   = attribute.Key("shoal.new_cell")
	Score     = attribute.Key("shoal.score")
	Host      = attribute.Key("shoal.host")
	GPU       = attribute.Key("shoal.gpu")
)

// Instrument names. Prometheus shows them with '.' as '_' and a unit or _total suffix:
// shoal.candidates is shoal_candidates_total, gen_ai.client.operation.duration is
// gen_ai_client_operation_duration_seconds.
const (
	MetricCandidates        = "shoal.candidates"                 // counter {status, run}: results folded
	MetricBestScore         = "shoal.run.best_score"             // gauge {run}
	MetricQueueDepth        = "shoal.queue.depth"                // gauge {stream, consumer}: pending + unacked
	MetricConsumerLag       = "shoal.consumer.lag"               // gauge {stream, consumer}: not yet delivered
	MetricProcessDuration   = "messaging.process.duration"       // histogram s {destination, error.type}
	MetricTasksInFlight     = "shoal.generator.tasks.in_flight"  // updown {model}
	MetricTokenUsage        = "gen_ai.client.token.usage"        // histogram {token} {model, token.type}
	MetricOperationDuration = "gen_ai.client.operation.duration" // histogram s {model, error.type}
	MetricEvalDuration      = "shoal.evaluation.duration"        // histogram s {status}
	MetricSandboxLimits     = "shoal.sandbox.limits"             // counter {limit}
	MetricGPULeased         = "shoal.gpu.memory.leased"          // gauge By {host, gpu}
	MetricGPUUsed           = "shoal.gpu.memory.used"            // gauge By {host, gpu}
	MetricLeaseWaitTime     = "shoal.gpu.lease.wait.duration"    // histogram s {model}
)

// DurationBuckets are the bounds of shoal's duration histograms, in seconds: model calls
// and evaluations run from milliseconds (the mutate backend, a trivial evaluator) to minutes.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// TokenBuckets are the bounds of gen_ai.client.token.usage, as the semantic conventions
// advise.
var TokenBuckets = []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
