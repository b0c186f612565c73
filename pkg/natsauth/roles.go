// Package natsauth holds who may do what on shoal's bus: one NATS user per role, each allowed
// the subjects and JetStream API requests that its service uses and nothing else. The embedded
// server of `shoal up`, the nats-server config file in deploy/nats and the tests all take their
// users from here, so the three cannot drift apart.
package natsauth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// Role is a NATS user name and the permission set that goes with it.
type Role string

// The roles: one per service, a seeder for people and scripts that start runs, and the admin
// that the CLI uses (the only one that may delete or purge a stream or a bucket).
const (
	Planner   Role = "planner"
	Generator Role = "generator"
	Evaluator Role = "evaluator"
	Archive   Role = "archive"
	Seeder    Role = "seeder"
	Admin     Role = "admin"
)

// Roles returns every role, services first.
func Roles() []Role { return []Role{Planner, Generator, Evaluator, Archive, Seeder, Admin} }

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(Roles(), r) {
		return "", fmt.Errorf("unknown role %q (have %s)", s, strings.Join(roleNames(), ", "))
	}
	return r, nil
}

func roleNames() []string {
	var out []string
	for _, r := range Roles() {
		out = append(out, string(r))
	}
	return out
}

// InboxPrefix is where the role's replies arrive (nats.CustomInboxPrefix): _INBOX.<role>. A
// role may subscribe under its own prefix only, so no service reads the answers meant for
// another (KV reads, archive samples, JetStream API replies, consumer deliveries). It is ""
// for the admin, which keeps NATS' default so that natscli works with its credentials.
func (r Role) InboxPrefix() string {
	if r == Admin {
		return ""
	}
	return "_INBOX." + string(r)
}

// Permissions returns what role may publish and subscribe to under names. The admin may do
// everything; every other role is an allow list, so what is not named here is refused, and
// none names $JS.API.STREAM.DELETE, $JS.API.STREAM.UPDATE or a purge of a stream or bucket the
// pipeline depends on.
func Permissions(r Role, n protocol.Names) *server.Permissions {
	if r == Admin {
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{">"}},
		}
	}
	p := &perms{names: n}
	p.sub(r.InboxPrefix() + ".>")
	p.pub(api("INFO")) // nats.go asks before it makes a KV bucket
	// Every service makes the streams, buckets and stores that are missing when it starts
	// (natsx.Provision), so services may start in any order on a fresh server. Create is
	// refused for a stream that exists with another config, and nothing here may update one.
	if r != Seeder {
		for _, s := range allStreams(n) {
			p.pub(api("STREAM.CREATE." + s))
		}
	}

	runs, generators := n.RunsBucket(), n.GeneratorsBucket()
	inventory, leases, owners := n.GPUInventoryBucket(), n.GPULeasesBucket(), n.OwnersBucket()
	switch r {
	case Planner:
		p.publish(n.AllTasks())
		p.publish(n.AllEvents())  // run state changes
		p.publish(n.AllSamples()) // requests to the archive
		p.readKV(runs, generators, owners)
		p.writeKV(runs, protocol.RunPlannerKey("*")) // its own state of each run
		p.writeKV(owners, "planner.>")               // which replica plans which run
	case Generator:
		p.consume(n.TasksStream())
		p.publish(n.AllTasks()) // hands a task back when its model server waits for GPUs
		p.publish(n.AllCandidates())
		p.readKV(runs, generators, inventory, leases)
		p.writeKV(generators, ">") // its replica's entry
		p.writeKV(inventory, ">")  // its host's GPUs
		p.writeKV(leases, ">")     // GPU claims on its host
	case Evaluator:
		p.consume(n.CandidatesStream())
		p.publish(n.AllResults())
		p.readKV(runs)
		p.readObjects(n.BundlesStore())
	case Archive:
		p.consume(n.SeedsStream())
		p.readStream(n.ResultsStream()) // the population is a fold of RESULTS
		p.publish(n.AllCandidates())    // a seed program goes to the evaluators
		p.publish(n.AllResults())       // a seed that cannot be evaluated
		p.publish(n.AllEvents())
		p.serve(n.AllSamples(), n.AllSnapshots())
		p.readKV(runs, owners)
		p.writeKV(runs, protocol.RunConfigKey("*"), protocol.RunStateKey("*"), protocol.RunBestKey("*"))
		p.writeKV(owners, "archive.>")
		p.readObjects(n.BundlesStore())
		p.readObjects(n.SnapshotsStore())
		p.writeObjects(n.SnapshotsStore())
		// Replacing an object purges the old one's chunks by subject (nats.go's
		// ObjectStore.Put). The snapshot store is the archive's own cache, rebuilt from
		// RESULTS when lost, so this is the one purge a service may request.
		p.pub(api("STREAM.PURGE." + objStream(n.SnapshotsStore())))
	case Seeder:
		p.publish(n.AllSeeds())
		p.writeObjects(n.BundlesStore()) // the evaluator files of a new run
		p.readObjects(n.BundlesStore())
		p.sub(n.AllEvents()) // the archive's answer to a seed
		// Status: runs, their best programs, dead letters.
		p.readKV(runs)
		p.readStream(n.DeadStream())
		// The web UI (`shoal ui`) logs in as the seeder and reads, never writes: the
		// results it aggregates and the GPU lease map with the hosts' inventories and the
		// live generators.
		p.readStream(n.ResultsStream())
		p.readKV(leases, inventory, generators)
	}
	return p.permissions()
}

// perms collects the subjects of one role.
type perms struct {
	names         protocol.Names
	pubs, subs    []string
	allowResponse bool
}

func (p *perms) pub(s ...string) { p.pubs = append(p.pubs, s...) }
func (p *perms) sub(s ...string) { p.subs = append(p.subs, s...) }

// publish allows publishing to a stream's subjects (JetStream's ack comes to the inbox).
func (p *perms) publish(subject string) { p.pub(subject) }

// readStream allows reading a stream through consumers of the role's own making (ordered
// consumers, KV watches): create, look up, fetch from and delete them, and get single
// messages.
func (p *perms) readStream(stream string) {
	p.pub(
		api("STREAM.INFO."+stream),
		api("CONSUMER.CREATE."+stream), api("CONSUMER.CREATE."+stream+".>"),
		api("CONSUMER.INFO."+stream+".*"),
		api("CONSUMER.DELETE."+stream+".*"),
		api("CONSUMER.MSG.NEXT."+stream+".*"),
		api("STREAM.MSG.GET."+stream),
		api("DIRECT.GET."+stream), api("DIRECT.GET."+stream+".>"),
		"$JS.FC."+stream+".>", // flow control of push consumers (KV watches)
	)
}

// consume allows a durable work consumer on stream: reading, acking, and the dead-letter path
// (the MaxDeliver advisory, DEAD, and deleting the dead message from stream).
func (p *perms) consume(stream string) {
	p.readStream(stream)
	p.pub(
		"$JS.ACK."+stream+".>",
		p.names.Dead(stream),
		api("STREAM.MSG.DELETE."+stream),
	)
	p.sub("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + stream + ".*")
}

// serve allows answering requests on subjects, once per request.
func (p *perms) serve(subjects ...string) {
	p.sub(subjects...)
	p.allowResponse = true
}

func (p *perms) readKV(buckets ...string) {
	for _, b := range buckets {
		p.readStream(kvStream(b))
	}
}

// writeKV allows put, create, update and delete of keys matching each pattern in bucket.
func (p *perms) writeKV(bucket string, keys ...string) {
	for _, k := range keys {
		p.pub("$KV." + bucket + "." + k)
	}
}

func (p *perms) readObjects(store string) { p.readStream(objStream(store)) }

// writeObjects allows putting objects: their chunks and their meta.
func (p *perms) writeObjects(store string) {
	p.pub("$O."+store+".C.>", "$O."+store+".M.>")
}

func (p *perms) permissions() *server.Permissions {
	out := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedupe(p.pubs)},
		Subscribe: &server.SubjectPermission{Allow: dedupe(p.subs)},
	}
	if p.allowResponse {
		out.Response = &server.ResponsePermission{MaxMsgs: server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS, Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION}
	}
	return out
}

func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func api(s string) string { return "$JS.API." + s }

// kvStream and objStream are the streams behind a KV bucket and an object store.
func kvStream(bucket string) string { return "KV_" + bucket }
func objStream(store string) string { return "OBJ_" + store }

// allStreams names every stream of the wire contract, buckets and stores included.
func allStreams(n protocol.Names) []string {
	out := []string{n.SeedsStream(), n.TasksStream(), n.CandidatesStream(), n.ResultsStream(), n.EventsStream(), n.DeadStream()}
	for _, b := range []string{n.RunsBucket(), n.GeneratorsBucket(), n.GPUInventoryBucket(), n.GPULeasesBucket(), n.OwnersBucket()} {
		out = append(out, kvStream(b))
	}
	return append(out, objStream(n.BundlesStore()), objStream(n.SnapshotsStore()))
}

// Users returns the NATS users of the roles that have a password in passwords, for an
// embedded server's Options.Users.
func Users(n protocol.Names, passwords map[Role]string) []*server.User {
	var out []*server.User
	for _, r := range Roles() {
		if pw, ok := passwords[r]; ok {
			out = append(out, &server.User{Username: string(r), Password: pw, Permissions: Permissions(r, n)})
		}
	}
	return out
}
