//! End-to-end QoS 1 (`docs/PROTOCOL.md` "Outbox and acknowledgements").
//!
//! A node keeps every QoS ≥ 1 message it creates in a bounded [`Outbox`] until the node
//! holding the broker session (the root) reports that the broker acknowledged it: the
//! root maps each broker publication to a token ([`Action::Publish`]'s
//! `Publish::token`), the runtime answers with [`Node::handle_mqtt_acked`], and an
//! `Ack { origin, id }` frame travels back down the branch towards the origin.
//! Unacknowledged messages are sent again after every re-attachment and, while in the
//! mesh, after `link_timeout` without an acknowledgement.
//!
//! Overflow policy: QoS 0 messages never enter the outbox (they are sent at once or
//! refused). A retained message replaces an unacknowledged one on the same topic (only
//! the newest retained value matters; counted as `outbox_superseded`). Otherwise a full
//! outbox refuses the new message with [`PublishError::OutboxFull`] (counted as
//! `outbox_full`); nothing already accepted is ever dropped.
//!
//! The root remembers the last [`RECENT_LEN`] acknowledged `(origin, id)` pairs, and the
//! ones in flight to the broker: a copy of either is a duplicate (counted, not published
//! again; a copy of an acknowledged one is acknowledged again at once). Duplicates the
//! root cannot see (after a root change, or beyond the window) reach the broker, as QoS 1
//! allows.

use heapless::{Deque, Vec};

use super::{Action, Level, LinkId, Node, Publish, PublishError, State};
use crate::config::MAX_OUTBOX_LEN;
use crate::identity::NodeId;
use crate::link::{Frame, MAX_PAYLOAD};
use crate::time::{Duration, Instant};
use crate::topic::{MsgType, Topic};

/// Broker publications the root tracks at once (its own and its subtree's).
pub const INFLIGHT_LEN: usize = 32;
/// Acknowledged `(origin, id)` pairs the root remembers to spot duplicates.
pub const RECENT_LEN: usize = 64;
/// Retry delay when the transmit or action queue had no room.
const BUSY_RETRY: Duration = Duration::from_millis(50);
/// Free queue slots kept for everything else when flushing the outbox.
const FLUSH_RESERVE: usize = super::CHILD_SLOTS + 4;

/// One unacknowledged message.
#[derive(Debug)]
struct Entry {
    id: u16,
    msg_type: MsgType,
    topic: Topic,
    payload: Vec<u8, MAX_PAYLOAD>,
    /// When to send it (again); `None` while waiting on the current broker session.
    due: Option<Instant>,
}

/// The bounded store of unacknowledged QoS ≥ 1 messages.
#[derive(Debug)]
pub(super) struct Outbox {
    entries: Vec<Entry, { MAX_OUTBOX_LEN as usize }>,
    next_id: u16,
}

/// Why [`Outbox::push`] refused a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PushError {
    Full,
    TooLarge,
}

impl Outbox {
    /// An empty outbox whose IDs start at `first_id` (random per boot, so a restarted
    /// node is not mistaken for a duplicate of its former self).
    pub(super) fn new(first_id: u16) -> Outbox {
        Outbox {
            entries: Vec::new(),
            next_id: first_id.max(1),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Stores a message, due at once; its message ID, and whether it superseded an
    /// older retained value on the same topic.
    pub(super) fn push(
        &mut self,
        limit: usize,
        topic: &str,
        payload: &[u8],
        msg_type: MsgType,
        now: Instant,
    ) -> Result<(u16, bool), PushError> {
        let mut t = Topic::new();
        t.push_str(topic).map_err(|_| PushError::TooLarge)?;
        let mut p = Vec::new();
        p.extend_from_slice(payload)
            .map_err(|_| PushError::TooLarge)?;
        let id = self.next_id;
        // 0 means "no acknowledgement requested" on the wire.
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let entry = Entry {
            id,
            msg_type,
            topic: t,
            payload: p,
            due: Some(now),
        };
        if msg_type.retain() {
            if let Some(old) = self
                .entries
                .iter_mut()
                .find(|e| e.msg_type.retain() && e.topic == entry.topic)
            {
                *old = entry;
                return Ok((id, true));
            }
        }
        if self.entries.len() >= limit.min(self.entries.capacity()) {
            return Err(PushError::Full);
        }
        // Cannot fail: the length was checked against the capacity above.
        let _ = self.entries.push(entry);
        Ok((id, false))
    }

    /// Drops message `id`; whether it was there.
    pub(super) fn ack(&mut self, id: u16) -> bool {
        match self.entries.iter().position(|e| e.id == id) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Every message is due again (a new parent or a new broker session).
    pub(super) fn all_due(&mut self, now: Instant) {
        for e in &mut self.entries {
            e.due = Some(now);
        }
    }

    /// Message `id` is due again at `now` (its acknowledgement was given up on).
    pub(super) fn set_due(&mut self, id: u16, now: Instant) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.due = Some(now);
        }
    }

    /// The earliest due time.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.entries.iter().filter_map(|e| e.due).min()
    }

    fn first_due(&self, now: Instant) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.due.is_some_and(|d| d <= now))
    }
}

/// A broker publication the root waits on.
#[derive(Debug)]
pub(super) struct Inflight {
    token: u32,
    origin: NodeId,
    id: u16,
    since: Instant,
}

/// The root's view of acknowledgements: publications in flight and recent acks.
#[derive(Debug, Default)]
pub(super) struct Acks {
    inflight: Vec<Inflight, INFLIGHT_LEN>,
    recent: Deque<(NodeId, u16), RECENT_LEN>,
    next_token: u32,
}

impl Acks {
    /// The broker session is gone: its acknowledgements will never come.
    pub(super) fn session_lost(&mut self) {
        self.inflight.clear();
    }

    fn in_flight(&self, origin: &str, id: u16) -> bool {
        self.inflight
            .iter()
            .any(|f| f.id == id && f.origin.as_str() == origin)
    }

    fn recently_acked(&self, origin: &str, id: u16) -> bool {
        self.recent
            .iter()
            .any(|(o, i)| *i == id && o.as_str() == origin)
    }

    /// A token for a new publication, or `None` when too many are in flight.
    fn track(&mut self, origin: &str, id: u16, now: Instant) -> Option<u32> {
        if self.inflight.is_full() {
            return None;
        }
        let origin = NodeId::new(origin).ok()?;
        self.next_token = self.next_token.wrapping_add(1);
        let token = self.next_token;
        // Cannot fail: fullness was checked above.
        let _ = self.inflight.push(Inflight {
            token,
            origin,
            id,
            since: now,
        });
        Some(token)
    }

    /// When the oldest publication in flight expires.
    pub(super) fn next_expiry(&self, max_age: Duration) -> Option<Instant> {
        self.inflight.iter().map(|f| f.since + max_age).min()
    }

    /// Forgets publications in flight for `max_age` or longer (their acknowledgement was
    /// lost: the runtime dropped the publication, or a PUBACK went missing); the IDs of
    /// our own (`own`) among them.
    fn expire(&mut self, now: Instant, max_age: Duration, own: &str) -> Vec<u16, INFLIGHT_LEN> {
        let mut mine = Vec::new();
        self.inflight.retain(|f| {
            let keep = f.since + max_age > now;
            if !keep && f.origin.as_str() == own {
                // Cannot fail: at most INFLIGHT_LEN entries expire.
                let _ = mine.push(f.id);
            }
            keep
        });
        mine
    }

    fn acked(&mut self, token: u32) -> Option<(NodeId, u16)> {
        let i = self.inflight.iter().position(|f| f.token == token)?;
        let f = self.inflight.swap_remove(i);
        if self.recent.is_full() {
            self.recent.pop_front();
        }
        let _ = self.recent.push_back((f.origin.clone(), f.id));
        Some((f.origin, f.id))
    }
}

impl Node {
    /// The broker acknowledged the publication of [`Action::Publish`] with `token`
    /// (rumqttc: the PUBACK of its packet ID). Unknown or stale tokens are ignored.
    pub fn handle_mqtt_acked(&mut self, now: Instant, token: u32) {
        self.now = self.now.max(now);
        let Some((origin, id)) = self.acks.acked(token) else {
            return;
        };
        self.on_ack(origin.as_str(), id);
        self.flush_outbox();
    }

    /// Unacknowledged QoS ≥ 1 messages in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Queues one of our own QoS ≥ 1 messages and sends what is due.
    pub(super) fn publish_reliable(
        &mut self,
        topic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        let limit = usize::from(self.config.outbox_len);
        match self.outbox.push(limit, topic, payload, msg_type, self.now) {
            Ok((_, superseded)) => {
                if superseded {
                    self.counters.outbox_superseded += 1;
                }
            }
            Err(PushError::Full) => {
                self.counters.outbox_full += 1;
                return Err(PublishError::OutboxFull);
            }
            Err(PushError::TooLarge) => return Err(PublishError::TooLarge),
        }
        self.flush_outbox();
        Ok(())
    }

    /// How long the root waits on a broker acknowledgement before it gives up on it:
    /// twice the MQTT keep-alive (a session whose broker is gone has dropped by then).
    pub(super) fn ack_timeout(&self) -> Duration {
        self.config.timing.mqtt_keepalive.mul_div(2, 1)
    }

    /// Sends every due outbox message the queues have room for.
    pub(super) fn flush_outbox(&mut self) {
        let now = self.now;
        if self.state == State::Root {
            let own = self.id.clone();
            for id in self.acks.expire(now, self.ack_timeout(), own.as_str()) {
                self.outbox.set_due(id, now);
            }
        }
        let retry = self.config.timing.link_timeout;
        while let Some(i) = self.outbox.first_due(now) {
            let room = match self.state {
                State::Root => {
                    super::QUEUE_LEN - self.actions.len() > FLUSH_RESERVE
                        && !self.acks.inflight.is_full()
                }
                State::Mesh => super::QUEUE_LEN - self.transmits.len() > FLUSH_RESERVE,
                // Not online: everything is sent again on re-attachment.
                _ => return,
            };
            if !room {
                self.outbox.entries[i].due = Some(now + BUSY_RETRY);
                continue;
            }
            if self.state == State::Root {
                let token = self
                    .acks
                    .track(self.id.as_str(), self.outbox.entries[i].id, now);
                let e = &mut self.outbox.entries[i];
                // The broker session retransmits by itself; resend on the next one.
                e.due = None;
                let publish = Publish {
                    topic: e.topic.clone(),
                    payload: e.payload.clone(),
                    msg_type: e.msg_type,
                    token,
                };
                let _ = self.push_action(Action::Publish(publish));
            } else {
                let e = &mut self.outbox.entries[i];
                e.due = Some(now + retry);
                let (id, msg_type) = (e.id, e.msg_type);
                // Copies so `send_frame` may borrow `self` mutably.
                let topic = e.topic.clone();
                let payload = e.payload.clone();
                let origin = self.id.clone();
                let frame = Frame::Publish {
                    id,
                    origin: origin.as_str(),
                    msg_type,
                    topic: &topic,
                    payload: &payload,
                };
                let _ = self.send_frame(LinkId::Parent, &frame);
            }
            self.counters.outbox_sent += 1;
        }
    }

    /// A child's QoS ≥ 1 message at the root: publish it once, however often it comes.
    pub(super) fn publish_relayed_reliable(
        &mut self,
        origin: &str,
        id: u16,
        topic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        if self.acks.in_flight(origin, id) {
            self.counters.duplicates += 1;
            return Ok(());
        }
        if self.acks.recently_acked(origin, id) {
            self.counters.duplicates += 1;
            self.on_ack(origin, id);
            return Ok(());
        }
        let token = self
            .acks
            .track(origin, id, self.now)
            .ok_or(PublishError::QueueFull)?;
        self.publish_action(topic, payload, msg_type, Some(token))
    }

    /// An acknowledgement for `(origin, id)`: ours, or passed down towards `origin`.
    pub(super) fn on_ack(&mut self, origin: &str, id: u16) {
        if origin == self.id.as_str() {
            if self.outbox.ack(id) {
                self.counters.acked += 1;
            }
            return;
        }
        let frame = Frame::Ack { origin, id };
        match self.route(origin) {
            Some(slot) => {
                let _ = self.send_frame(LinkId::Child(slot), &frame);
            }
            None => {
                self.counters.route_flooded += 1;
                self.log(
                    Level::Debug,
                    format_args!("ack for unknown {origin}: flooding"),
                );
                self.flood(&frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn full_outbox_refuses_and_keeps_what_it_has() {
        let mut o = Outbox::new(7);
        for i in 0..3 {
            assert_eq!(
                o.push(3, "t", b"x", MsgType::Qos1, at(i)),
                Ok((7 + i as u16, false))
            );
        }
        assert_eq!(
            o.push(3, "t", b"x", MsgType::Qos1, at(9)),
            Err(PushError::Full)
        );
        assert_eq!(o.len(), 3);
        assert!(o.ack(8));
        assert!(!o.ack(8));
        assert_eq!(
            o.push(3, "t", b"y", MsgType::Qos1, at(9)).map(|r| r.1),
            Ok(false)
        );
    }

    #[test]
    fn retained_value_supersedes_the_unacked_one_on_its_topic() {
        let mut o = Outbox::new(1);
        o.push(2, "a", b"1", MsgType::RetainedQos1, at(0)).unwrap();
        o.push(2, "b", b"1", MsgType::Qos1, at(0)).unwrap();
        // Full, but a retained value on topic `a` replaces the older one.
        assert_eq!(
            o.push(2, "a", b"2", MsgType::RetainedQos1, at(1)),
            Ok((3, true))
        );
        assert_eq!(o.len(), 2);
        assert!(!o.ack(1), "the superseded ID is gone");
        assert_eq!(o.entries[0].payload.as_slice(), b"2");
        // A non-retained message on the same topic never replaces anything.
        assert_eq!(
            o.push(2, "b", b"2", MsgType::Qos1, at(1)),
            Err(PushError::Full)
        );
    }

    #[test]
    fn ids_skip_zero_and_limit_never_exceeds_capacity() {
        let mut o = Outbox::new(u16::MAX);
        assert_eq!(
            o.push(99, "t", b"", MsgType::Qos1, at(0)),
            Ok((u16::MAX, false))
        );
        assert_eq!(o.push(99, "t", b"", MsgType::Qos1, at(0)), Ok((1, false)));
        for _ in 2..MAX_OUTBOX_LEN {
            o.push(255, "t", b"", MsgType::Qos1, at(0)).unwrap();
        }
        assert_eq!(
            o.push(255, "t", b"", MsgType::Qos1, at(0)),
            Err(PushError::Full)
        );
    }

    #[test]
    fn due_times_follow_resets() {
        let mut o = Outbox::new(1);
        o.push(4, "t", b"", MsgType::Qos1, at(5)).unwrap();
        assert_eq!(o.next_due(), Some(at(5)));
        o.entries[0].due = None;
        assert_eq!(o.next_due(), None);
        assert_eq!(o.first_due(at(100)), None);
        o.all_due(at(50));
        assert_eq!(o.first_due(at(50)), Some(0));
    }

    mod props {
        extern crate std;
        use std::vec::Vec as StdVec;

        use proptest::prelude::*;

        use super::*;

        #[derive(Clone, Debug)]
        enum Op {
            Push { topic: u8, retained: bool },
            Ack(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                (0u8..4, any::<bool>()).prop_map(|(topic, retained)| Op::Push { topic, retained }),
                (0usize..40).prop_map(Op::Ack),
            ]
        }

        proptest! {
            /// Against a model: the outbox never holds more than its limit, refuses only
            /// when full, never loses an accepted message except one superseded by a
            /// newer retained value on its topic, and acknowledges each ID once.
            #[test]
            fn outbox_matches_its_overflow_policy(
                limit in 1usize..=MAX_OUTBOX_LEN as usize,
                ops in proptest::collection::vec(op(), 0..200),
            ) {
                let mut o = Outbox::new(1);
                // (id, topic, retained) of every message the model says is held.
                let mut model: StdVec<(u16, u8, bool)> = StdVec::new();
                let mut issued: StdVec<u16> = StdVec::new();
                for op in ops {
                    match op {
                        Op::Push { topic, retained } => {
                            let name = [b't', b'0' + topic];
                            let name = core::str::from_utf8(&name).unwrap();
                            let kind = if retained { MsgType::RetainedQos1 } else { MsgType::Qos1 };
                            let r = o.push(limit, name, b"p", kind, Instant::ZERO);
                            let old = model.iter().position(|m| retained && m.2 && m.1 == topic);
                            match (r, old) {
                                (Ok((id, true)), Some(i)) => {
                                    model[i] = (id, topic, true);
                                    issued.push(id);
                                }
                                (Ok((id, false)), None) => {
                                    prop_assert!(model.len() < limit);
                                    model.push((id, topic, retained));
                                    issued.push(id);
                                }
                                (Err(PushError::Full), None) => prop_assert_eq!(model.len(), limit),
                                (r, old) => prop_assert!(false, "push {:?} with model slot {:?}", r, old),
                            }
                        }
                        Op::Ack(i) => {
                            let Some(&id) = issued.get(i) else { continue };
                            let held = model.iter().position(|m| m.0 == id);
                            prop_assert_eq!(o.ack(id), held.is_some());
                            if let Some(i) = held {
                                model.remove(i);
                            }
                        }
                    }
                    prop_assert_eq!(o.len(), model.len());
                    prop_assert!(o.len() <= limit);
                }
            }
        }
    }

    #[test]
    fn acks_track_dedupe_and_forget_on_session_loss() {
        let mut a = Acks::default();
        let t1 = a.track("N1", 5, at(0)).unwrap();
        assert!(a.in_flight("N1", 5));
        assert!(!a.in_flight("N2", 5));
        assert_eq!(
            a.acked(t1).map(|(o, i)| (o.as_str().len(), i)),
            Some((2, 5))
        );
        assert!(a.recently_acked("N1", 5));
        assert_eq!(a.acked(t1), None, "a token is acknowledged once");
        let t2 = a.track("N1", 6, at(0)).unwrap();
        a.session_lost();
        assert_eq!(a.acked(t2), None);
        for i in 0..INFLIGHT_LEN as u16 {
            a.track("N3", i, at(0)).unwrap();
        }
        assert_eq!(a.track("N3", 999, at(0)), None);
        a.session_lost();
        for i in 0..(RECENT_LEN + 5) as u16 {
            let t = a.track("N4", 1000 + i, at(0)).unwrap();
            assert!(a.acked(t).is_some());
        }
        assert_eq!(a.recent.len(), RECENT_LEN);
        assert!(!a.recently_acked("N4", 1000), "the oldest were forgotten");
        assert!(a.recently_acked("N4", 1000 + RECENT_LEN as u16 + 4));
        // A lost acknowledgement frees its slot after the timeout; ours come back.
        let max_age = Duration::from_secs(20);
        a.track("ME", 1, at(0)).unwrap();
        a.track("N5", 2, at(5_000)).unwrap();
        assert_eq!(a.next_expiry(max_age), Some(at(20_000)));
        assert!(a.expire(at(19_999), max_age, "ME").is_empty());
        assert_eq!(a.expire(at(20_000), max_age, "ME").as_slice(), [1]);
        assert_eq!(a.inflight.len(), 1);
    }
}
