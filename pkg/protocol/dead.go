package protocol

import "strconv"

// Headers of a message on the DEAD stream (shoal.dead.<stream>). The body is the original
// message's body, unchanged; these headers say where it came from and why it died, so an
// operator can read it with `shoal dead` or `nats stream view` and republish it by hand.
const (
	// HeaderDeadReason is the last error a handler returned, or why no handler acked it.
	HeaderDeadReason = "Shoal-Dead-Reason"
	// HeaderDeadStream, HeaderDeadSubject and HeaderDeadSequence locate the original message.
	HeaderDeadStream   = "Shoal-Dead-Stream"
	HeaderDeadSubject  = "Shoal-Dead-Subject"
	HeaderDeadSequence = "Shoal-Dead-Sequence"
	// HeaderDeadConsumer is the durable consumer that gave up on it.
	HeaderDeadConsumer = "Shoal-Dead-Consumer"
	// HeaderDeadDeliveries is how often it was delivered before it was dead-lettered.
	HeaderDeadDeliveries = "Shoal-Dead-Deliveries"
	// HeaderDeadRun is the run the original subject names ("" when it names none).
	HeaderDeadRun = "Shoal-Dead-Run"
	// HeaderDeadMsgID is the original Nats-Msg-Id (the dead letter's own is DeadMsgID).
	HeaderDeadMsgID = "Shoal-Dead-Msg-Id"
)

// DeadMsgID is the Nats-Msg-Id of the dead letter of sequence seq of stream: every replica
// that sees the same exhausted message publishes the same id, so DEAD stores it once.
func DeadMsgID(stream string, seq uint64) string {
	return "dead." + stream + "." + strconv.FormatUint(seq, 10)
}

// DeadReasonNoAck is the reason of a message whose every delivery ended without an ack or a
// nak: the handler crashed its process or hung.
const DeadReasonNoAck = "max deliveries exhausted without an ack"
