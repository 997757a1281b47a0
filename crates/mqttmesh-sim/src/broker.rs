//! The broker model: one MQTT session per root node, subscriptions with `+`/`#`
//! wildcards, retained messages, last wills, and an observer log of every publication.
//!
//! It is a model of the broker-visible contract of `../shared/spec/compat.md`, not an
//! MQTT implementation. QoS 1 from a root is acknowledged: a publication that carries a
//! token is answered with a PUBACK (`Node::handle_mqtt_acked`) once the broker accepted
//! it, unless the broker restarted meanwhile ([`crate::World::broker_restart`]; then it
//! is lost, as on a real broker without persistence). Deliveries to sessions are not
//! acknowledged (the simulated network does not lose what it carries), and a message
//! matching several filters of one session is delivered once.

use std::collections::{BTreeMap, BTreeSet};

use mqttmesh_core::Instant;

use crate::radio::NodeIdx;

/// Payload of a last will (compat.md: `info/available` = `offline`).
pub const WILL_PAYLOAD: &[u8] = b"offline";

/// One publication the broker accepted, as an observer subscribed to `#` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    /// When the broker accepted it.
    pub at: Instant,
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retain flag as published.
    pub retain: bool,
    /// The root node whose session published it; `None` for external clients and wills.
    pub from: Option<NodeIdx>,
}

impl Publication {
    /// The payload as text (lossy), for assertions and reports.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// One node's broker session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Session number, unique over the run (stale deliveries compare it).
    pub id: u64,
    /// MQTT client ID.
    pub client_id: String,
    /// Last-will topic (payload `offline`, retained).
    pub will_topic: String,
    /// Subscribed filters.
    pub filters: Vec<String>,
}

/// The broker: sessions, retained store and observer log.
#[derive(Clone, Debug)]
pub struct Broker {
    sessions: BTreeMap<NodeIdx, Session>,
    /// Filter → subscribed nodes: a publication is matched once per distinct filter.
    subscribers: BTreeMap<String, BTreeSet<NodeIdx>>,
    retained: BTreeMap<String, Vec<u8>>,
    log: Vec<Publication>,
    next_session: u64,
    keep_log: bool,
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            sessions: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            retained: BTreeMap::new(),
            log: Vec::new(),
            next_session: 0,
            keep_log: true,
        }
    }
}

impl Broker {
    /// Opens a session for `node` (replacing any older one silently, as a client-ID
    /// takeover would). Returns its number.
    pub(crate) fn open(&mut self, node: NodeIdx, client_id: &str, will_topic: &str) -> u64 {
        self.next_session += 1;
        let session = Session {
            id: self.next_session,
            client_id: client_id.to_owned(),
            will_topic: will_topic.to_owned(),
            filters: Vec::new(),
        };
        self.forget_filters(node);
        self.sessions.insert(node, session);
        self.next_session
    }

    fn forget_filters(&mut self, node: NodeIdx) {
        let Some(old) = self.sessions.get(&node) else {
            return;
        };
        for f in &old.filters {
            if let Some(set) = self.subscribers.get_mut(f) {
                set.remove(&node);
                if set.is_empty() {
                    self.subscribers.remove(f);
                }
            }
        }
    }

    /// Ends `node`'s session. A clean end (MQTT DISCONNECT) drops the will; an unclean
    /// one returns the will topic, for the caller to publish.
    pub(crate) fn close(&mut self, node: NodeIdx, clean: bool) -> Option<String> {
        self.forget_filters(node);
        let session = self.sessions.remove(&node)?;
        (!clean && !session.will_topic.is_empty()).then_some(session.will_topic)
    }

    /// Adds a filter to `node`'s session; returns the retained messages it matches.
    pub(crate) fn subscribe(&mut self, node: NodeIdx, filter: &str) -> Vec<(String, Vec<u8>)> {
        let Some(session) = self.sessions.get_mut(&node) else {
            return Vec::new();
        };
        if !session.filters.iter().any(|f| f == filter) {
            session.filters.push(filter.to_owned());
            self.subscribers
                .entry(filter.to_owned())
                .or_default()
                .insert(node);
        }
        // Only topics starting with the filter's literal part can match.
        let literal = filter.find(['+', '#']).map_or(filter, |i| &filter[..i]);
        self.retained
            .range::<str, _>((
                std::ops::Bound::Included(literal),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(topic, _)| topic.starts_with(literal))
            .filter(|(topic, _)| topic_matches(filter, topic))
            .map(|(t, p)| (t.clone(), p.clone()))
            .collect()
    }

    /// Accepts a publication: logs it, updates the retained store (an empty retained
    /// payload deletes), and returns the sessions to deliver it to.
    pub(crate) fn publish(&mut self, publication: Publication) -> Vec<(NodeIdx, u64)> {
        if publication.retain {
            if publication.payload.is_empty() {
                self.retained.remove(&publication.topic);
            } else {
                self.retained
                    .insert(publication.topic.clone(), publication.payload.clone());
            }
        }
        let mut nodes = BTreeSet::new();
        for (filter, subscribed) in &self.subscribers {
            if topic_matches(filter, &publication.topic) {
                nodes.extend(subscribed.iter().copied());
            }
        }
        let targets = nodes
            .into_iter()
            .filter_map(|n| self.sessions.get(&n).map(|s| (n, s.id)))
            .collect();
        if self.keep_log {
            self.log.push(publication);
        }
        targets
    }

    /// Ends every session without wills (the broker died); returns their nodes.
    pub(crate) fn close_all(&mut self) -> Vec<NodeIdx> {
        self.subscribers.clear();
        std::mem::take(&mut self.sessions).into_keys().collect()
    }

    /// Whether to keep the observer log (default on; big runs turn it off to save
    /// memory, message accounting does not need it).
    pub fn set_keep_log(&mut self, on: bool) {
        self.keep_log = on;
    }

    /// Forgets every retained message (a restart without persistence).
    pub(crate) fn clear_retained(&mut self) {
        self.retained.clear();
    }

    /// `node`'s session, if it has one.
    pub fn session(&self, node: NodeIdx) -> Option<&Session> {
        self.sessions.get(&node)
    }

    /// The retained payload of `topic`.
    pub fn retained(&self, topic: &str) -> Option<&[u8]> {
        self.retained.get(topic).map(Vec::as_slice)
    }

    /// Every publication so far, in the order the broker accepted them.
    pub fn log(&self) -> &[Publication] {
        &self.log
    }
}

/// Whether MQTT topic filter `filter` matches `topic` (`+` one level, `#` the rest,
/// including the parent level itself).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(topic: &str, payload: &[u8], retain: bool) -> Publication {
        Publication {
            at: Instant::ZERO,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            retain,
            from: None,
        }
    }

    #[test]
    fn wildcards_match_like_mqtt() {
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("#", "x"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b/c", "a/b"));
    }

    #[test]
    fn retained_empty_payload_deletes() {
        let mut broker = Broker::default();
        broker.publish(publication("t", b"x", true));
        assert_eq!(broker.retained("t"), Some(&b"x"[..]));
        broker.publish(publication("t", b"", true));
        assert_eq!(broker.retained("t"), None);
        assert_eq!(broker.log().len(), 2);
    }

    #[test]
    fn subscriptions_route_and_replay_retained() {
        let mut broker = Broker::default();
        broker.publish(publication("in/a", b"r", true));
        let s1 = broker.open(1, "c1", "out/1/info/available");
        let s2 = broker.open(2, "c2", "");
        assert_eq!(
            broker.subscribe(1, "in/#"),
            vec![("in/a".into(), b"r".to_vec())]
        );
        broker.subscribe(1, "in/+");
        broker.subscribe(2, "out/#");
        assert_eq!(
            broker.publish(publication("in/b", b"", false)),
            vec![(1, s1)]
        );
        assert_eq!(
            broker.publish(publication("out/b", b"", false)),
            vec![(2, s2)]
        );
        assert_eq!(
            broker.close(1, false).as_deref(),
            Some("out/1/info/available")
        );
        assert_eq!(broker.close(2, false), None);
        assert!(broker.publish(publication("in/b", b"", false)).is_empty());
    }

    #[test]
    fn clean_close_drops_the_will() {
        let mut broker = Broker::default();
        broker.open(3, "c", "w");
        assert_eq!(broker.close(3, true), None);
        assert!(broker.session(3).is_none());
    }
}
