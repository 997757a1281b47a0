//! The uplink half of the node: scan, rank, associate, MQTT session or parent link and
//! join handshake, going online, and losing the uplink.

use core::fmt::Write as _;
use core::net::Ipv4Addr;

use heapless::String;

use super::{Action, ChildState, Event, Handshake, Level, LinkId, Node};
use crate::identity::NodeId;
use crate::link::{self, Frame, JoinRequest, Nonce, Path, Transcript};
use crate::time::{Duration, Instant};
use crate::topic;
use crate::uplink::{self, Kind, ScanEntry};

/// How long a parent that refused us, or failed, is kept out of the ranking.
const PENALTY: Duration = Duration::from_secs(30);
/// Largest backoff multiplier (2^3).
const MAX_BACKOFF_SHIFT: u8 = 3;
/// After a channel scan (just after a loss) that found nothing to join: the next one,
/// plus up to half this in jitter.
const CHANNEL_RESCAN: Duration = Duration::from_millis(100);

/// Where the node is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting before the next scan.
    Idle,
    /// A scan is running.
    Scanning,
    /// Associating with a candidate.
    Associating,
    /// On the router, opening the broker session.
    MqttConnecting,
    /// Online through our own broker session.
    Root,
    /// Associated with a parent's AP, opening the link.
    LinkConnecting,
    /// Link open, join request sent.
    Joining,
    /// Online through a parent.
    Mesh,
    /// Linked to a parent that lost its own uplink and is recovering: the link stays
    /// up for the grace period (`Timing::uplink_grace`), nothing is published.
    Held,
}

/// Why an association failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssocError {
    /// The AP is gone or out of range.
    NotFound,
    /// Wrong passphrase.
    AuthFailed,
    /// The AP has no room for another station.
    Full,
    /// No answer in time.
    Timeout,
}

impl core::fmt::Display for AssocError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AssocError::NotFound => "access point not found",
            AssocError::AuthFailed => "authentication failed",
            AssocError::Full => "access point full",
            AssocError::Timeout => "timed out",
        })
    }
}

impl core::error::Error for AssocError {}

impl Node {
    /// A scan finished with these access points.
    pub fn handle_scan_done(&mut self, now: Instant, entries: &[ScanEntry]) {
        if self.state != State::Scanning {
            // While online: a background scan refreshes the cached candidates
            // (healing), and one a `MakeRoom` request started may move us
            // (re-balancing).
            self.on_background_scan(now, entries);
            self.rebalance_scan_done(now, entries);
            return;
        }
        // A re-balancing scan overtaken by an uplink loss: its result serves the scan
        // we are in now.
        self.rebalance_scan_overtaken();
        self.scanned_at = Some(now);
        self.penalties.retain(|(_, until)| *until > now);
        let own = self.ap_mac;
        let penalties = &self.penalties;
        self.candidates = uplink::rank(&self.config, self.mesh_key, self.chip_id, entries, |b| {
            *b == own || penalties.iter().any(|(p, _)| p == b)
        });
        self.cursor = 0;
        let n = self.candidates.len();
        self.log(
            Level::Debug,
            format_args!("scan: {} APs, {n} candidates", entries.len()),
        );
        self.rebalance.knocking = false;
        if n == 0 && self.knock(now, entries) {
            self.try_next_candidate(now);
            return;
        }
        if n == 0 {
            // Nothing to join yet (our would-be parent may still be forming): look again
            // soon, without the exponential backoff meant for candidates that fail;
            // sooner still on our channel just after a loss, where a sibling that
            // closed its AP to re-join is about to open it again.
            self.state = State::Idle;
            let base = match self.channel_scan {
                true => CHANNEL_RESCAN,
                false => self.config.timing.retry_backoff,
            };
            let jitter = Duration::from_millis(self.rand.below(base.millis() / 2 + 1));
            self.deadline = Some(now + base + jitter);
            return;
        }
        self.try_next_candidate(now);
    }

    /// The association asked for by [`Action::Associate`] finished: our address, or why not.
    ///
    /// Results for any other BSSID than the one asked for last are stale and ignored.
    pub fn handle_associated(
        &mut self,
        now: Instant,
        bssid: crate::identity::Mac,
        result: Result<Ipv4Addr, AssocError>,
    ) {
        if self.state != State::Associating {
            return;
        }
        let Some(candidate) = self.current.clone() else {
            return;
        };
        if candidate.bssid != bssid {
            return;
        }
        match result {
            Err(e) => {
                self.log(
                    Level::Info,
                    format_args!("associate {} failed: {e}", candidate.bssid),
                );
                if self.rebalance.knocking {
                    // Knocked on a full AP (re-balancing): look again soon. Not
                    // penalized: it is a candidate again as soon as it has room.
                    self.backoff = 0;
                } else if e != AssocError::NotFound {
                    // An AP that was not there (its node crashed, or closed it to
                    // re-join) is not held against it: if the next scan sees it, it is
                    // back.
                    self.penalize(now, candidate.bssid, PENALTY.mul_div(1, 3));
                }
                self.fail_candidate(now);
            }
            Ok(ip) => {
                self.ip = Some(ip);
                self.deadline = Some(now + self.config.timing.connect_timeout);
                match candidate.kind {
                    Kind::Router { .. } => {
                        self.state = State::MqttConnecting;
                        let mut client_id = String::new();
                        let _ = client_id.push_str("mqttmesh-");
                        let _ = client_id.push_str(self.id.as_str());
                        let will_topic = topic::out_node(
                            &self.config.out_prefix,
                            &self.id,
                            topic::Info::Available.subtopic(),
                        )
                        .unwrap_or_default();
                        let _ = self.push_action(Action::ConnectMqtt {
                            client_id,
                            will_topic,
                        });
                    }
                    Kind::Mesh { .. } => {
                        self.state = State::LinkConnecting;
                        let _ = self.push_action(Action::OpenParentLink);
                    }
                }
            }
        }
    }

    /// The broker session asked for by [`Action::ConnectMqtt`] is up.
    pub fn handle_mqtt_connected(&mut self, now: Instant) {
        self.tick(now);
        if self.state != State::MqttConnecting {
            return;
        }
        self.path.clear();
        let _ = self.path.push(self.id.clone());
        self.state = State::Root;
        let _ = self.push_action(Action::Subscribe {
            filter: topic::subscription(&self.config.in_prefix),
        });
        self.go_online(now);
    }

    /// The broker session failed to open or was lost.
    pub fn handle_mqtt_disconnected(&mut self, now: Instant) {
        self.tick(now);
        match self.state {
            State::MqttConnecting => {
                self.log(Level::Info, format_args!("broker connection failed"));
                self.fail_candidate(now);
            }
            State::Root => self.lose_uplink(now, "broker session lost"),
            _ => {}
        }
    }

    /// The link asked for by [`Action::OpenParentLink`] is open.
    pub fn handle_link_opened(&mut self, now: Instant, link: LinkId) {
        if link != LinkId::Parent || self.state != State::LinkConnecting {
            return;
        }
        self.parent.open = true;
        self.parent.deframer.reset();
        self.parent.last_rx = now;
        self.parent.last_tx = now;
        self.state = State::Joining;
        self.deadline = Some(now + self.config.timing.connect_timeout);
        let mut nonce = self.nonce();
        // We understand MAKE_ROOM: say so (the nonce is covered by both tags).
        crate::link::subtree::mark_caps(&mut nonce, crate::link::subtree::CAP_MAKE_ROOM);
        self.parent.handshake = Handshake::AwaitChallenge { nonce };
        let version = self.config.firmware_version.clone();
        let id = self.id.clone();
        let request = Frame::JoinRequest(self.own_join_request(&nonce, &id, &version));
        if self.send_frame(LinkId::Parent, &request).is_err() {
            self.fail_candidate(now);
        }
    }

    /// Our join request; the same fields each time for a given nonce, so the challenge's
    /// transcript can be rebuilt from the nonce alone.
    fn own_join_request<'a>(
        &self,
        nonce: &Nonce,
        id: &'a NodeId,
        version: &'a str,
    ) -> JoinRequest<'a> {
        JoinRequest {
            nonce: *nonce,
            node_id: id.as_str(),
            chip_id: self.chip_id,
            firmware_id: self.config.firmware_id,
            firmware_version: version,
            subtree_height: 0,
        }
    }

    /// The parent's Challenge: check its proof of the mesh key, then send ours.
    pub(super) fn on_challenge(
        &mut self,
        now: Instant,
        parent_nonce: &Nonce,
        parent_id: &str,
        tag: &link::Tag,
    ) {
        let Handshake::AwaitChallenge { nonce } = self.parent.handshake else {
            return;
        };
        let version = self.config.firmware_version.clone();
        let id = self.id.clone();
        let request = self.own_join_request(&nonce, &id, &version);
        let transcript = Transcript::new(&request, parent_nonce, parent_id);
        let parent = NodeId::new(parent_id);
        let (Ok(transcript), Ok(parent)) = (transcript, parent) else {
            // Unreachable: our own request encodes and a decoded ID is valid.
            self.refuse_parent(now, link::Reason::Protocol, "invalid challenge");
            return;
        };
        if !self.join_key.verify_parent(&transcript, tag) {
            self.counters.auth_failures += 1;
            self.refuse_parent(
                now,
                link::Reason::Auth,
                "it failed to prove the mesh password",
            );
            return;
        }
        let proof = Frame::Proof {
            tag: self.join_key.child_tag(&transcript),
        };
        if self.send_frame(LinkId::Parent, &proof).is_err() {
            self.fail_candidate(now);
            return;
        }
        self.parent.handshake = Handshake::AwaitAccept { parent_id: parent };
    }

    /// Leaves the parent we are joining, tells it why, and keeps it out of the ranking
    /// for a while.
    fn refuse_parent(&mut self, now: Instant, reason: link::Reason, why: &str) {
        self.counters.refused_parents += 1;
        let bssid = self.current.as_ref().map(|c| c.bssid);
        match bssid {
            Some(b) => self.log(Level::Warn, format_args!("refusing parent {b}: {why}")),
            None => self.log(Level::Warn, format_args!("refusing parent: {why}")),
        }
        let _ = self.send_frame(LinkId::Parent, &Frame::Leave { reason });
        if let Some(bssid) = bssid {
            self.penalize(now, bssid, PENALTY);
        }
        self.fail_candidate(now);
    }

    /// The parent accepted us; `path` is its path (root first, parent last).
    pub(super) fn on_join_accept(&mut self, now: Instant, path: Path) {
        let Handshake::AwaitAccept { parent_id } = core::mem::take(&mut self.parent.handshake)
        else {
            return;
        };
        let reason = if path.last() != Some(&parent_id) {
            // A parent always names itself last, as it did in its Challenge.
            Some(link::Reason::Protocol)
        } else if path.contains(&self.id) {
            Some(link::Reason::Loop)
        } else if path.len() + 1 > usize::from(self.config.max_depth) {
            Some(link::Reason::TooDeep)
        } else {
            None
        };
        if let Some(reason) = reason {
            let mut why: String<64> = String::new();
            let _ = write!(why, "{reason}");
            self.refuse_parent(now, reason, &why);
            return;
        }
        self.path = path;
        if self.path.push(self.id.clone()).is_err() {
            // Unreachable: path.len() < max_depth <= MAX_PATH was checked above.
            self.fail_candidate(now);
            return;
        }
        self.state = State::Mesh;
        self.go_online(now);
    }

    /// The parent refused us.
    pub(super) fn on_join_reject(&mut self, now: Instant, reason: link::Reason) {
        self.counters.refused_parents += 1;
        if reason == link::Reason::Auth {
            // The parent could not check our proof: our password or SSID base differs.
            self.counters.auth_failures += 1;
        }
        self.log(Level::Info, format_args!("parent refused join: {reason}"));
        if let Some(c) = &self.current {
            let bssid = c.bssid;
            self.penalize(now, bssid, PENALTY);
        }
        self.fail_candidate(now);
    }

    pub(super) fn on_uplink_timer(&mut self, now: Instant) {
        match self.state {
            State::Idle => self.start_scan(now),
            State::Scanning => {
                self.log(Level::Warn, format_args!("scan timed out"));
                self.backoff_idle(now);
            }
            State::Associating | State::MqttConnecting | State::LinkConnecting | State::Joining => {
                let state = self.state;
                if state == State::Joining {
                    self.counters.handshake_failures += 1;
                }
                self.log(Level::Info, format_args!("{state:?} timed out"));
                if let Some(c) = &self.current {
                    let bssid = c.bssid;
                    self.penalize(now, bssid, PENALTY.mul_div(1, 3));
                }
                self.fail_candidate(now);
            }
            State::Root | State::Mesh | State::Held => {}
        }
    }

    pub(super) fn on_parent_closed(&mut self, now: Instant) {
        self.parent.open = false;
        self.parent.handshake = Handshake::Idle;
        match self.state {
            State::LinkConnecting | State::Joining => self.fail_candidate(now),
            State::Mesh | State::Held => self.lose_uplink(now, "parent link lost"),
            _ => {}
        }
    }

    pub(super) fn start_scan(&mut self, now: Instant) {
        self.state = State::Scanning;
        self.deadline = Some(now + self.config.timing.scan_timeout);
        let action = match self.recovery_channel(now) {
            Some(channel) => Action::ScanChannel(channel),
            None => Action::Scan,
        };
        self.channel_scan = matches!(action, Action::ScanChannel(_));
        let _ = self.push_action(action);
    }

    pub(super) fn try_next_candidate(&mut self, now: Instant) {
        match self.candidates.get(self.cursor).cloned() {
            Some(candidate) => {
                self.cursor += 1;
                let password = match candidate.kind {
                    Kind::Router { network } => self
                        .config
                        .networks
                        .get(usize::from(network))
                        .map(|n| n.password.clone())
                        .unwrap_or_default(),
                    Kind::Mesh { .. } => self.config.mesh_password.clone(),
                };
                self.state = State::Associating;
                self.deadline = Some(now + self.config.timing.associate_timeout);
                let _ = self.push_action(Action::Associate {
                    bssid: candidate.bssid,
                    ssid: candidate.ssid.clone(),
                    password,
                    channel: candidate.channel,
                });
                self.current = Some(candidate);
            }
            None if self.take_quick_rescan() => {
                self.current = None;
                self.start_scan(now);
            }
            None => {
                self.current = None;
                self.backoff_idle(now);
            }
        }
    }

    fn backoff_idle(&mut self, now: Instant) {
        self.state = State::Idle;
        let shift = self.backoff.min(self.backoff_cap(now, MAX_BACKOFF_SHIFT));
        self.backoff = self.backoff.saturating_add(1);
        let base = self.config.timing.retry_backoff.mul_div(1 << shift, 1);
        // Up to 25 % jitter so neighbours that lost the same parent spread out.
        let jitter = Duration::from_millis(self.rand.below(base.millis() / 4 + 1));
        self.deadline = Some(now + base + jitter);
    }

    /// Abandons the current candidate (whatever stage it reached) and tries the next.
    fn fail_candidate(&mut self, now: Instant) {
        match self.state {
            State::MqttConnecting => {
                let _ = self.push_action(Action::DisconnectMqtt);
            }
            State::LinkConnecting | State::Joining => self.close_parent_link(),
            _ => {}
        }
        // Also after an association that timed out: it may still complete late.
        self.ip = None;
        let _ = self.push_action(Action::Disassociate);
        self.try_next_candidate(now);
    }

    fn close_parent_link(&mut self) {
        self.parent.handshake = Handshake::Idle;
        if self.parent.open {
            self.parent.open = false;
            let _ = self.push_action(Action::CloseLink(LinkId::Parent));
        }
    }

    fn go_online(&mut self, now: Instant) {
        self.deadline = None;
        self.backoff = 0;
        self.counters.connects += 1;
        let depth = self.path.len();
        self.log(Level::Info, format_args!("online at depth {depth}"));
        // Whatever was not acknowledged goes again, on the new path or session.
        self.outbox.all_due(now);
        self.publish_info(now);
        // Whoever held our previous link (a parent, or the broker for a root) may still
        // declare us `offline` once it notices that link is dead, up to one link timeout
        // from now: say `online` again after that.
        let timing = self.config.timing;
        let will_after = timing.mqtt_keepalive.mul_div(3, 2);
        let window = if will_after > timing.link_timeout {
            will_after
        } else {
            timing.link_timeout
        };
        self.reassert_at = Some(now + window + timing.keepalive_interval);
        self.ever_online = true;
        if let Some(c) = &self.current {
            self.channel = Some(c.channel);
        }
        self.quick_rescan = false;
        self.lost_at = None;
        self.schedule_refresh(now);
        self.push_event(Event::Connected);
        if self.grace_until.take().is_some() {
            // Children kept through the outage learn our (possibly new) path.
            let path = self.path.clone();
            for slot in 0..super::CHILD_SLOTS {
                if matches!(self.children[slot].state, ChildState::Joined { .. }) {
                    // Cannot truncate: CHILD_SLOTS <= u8::MAX.
                    let link = LinkId::Child(slot as u8);
                    let _ = self.send_frame(link, &Frame::Resume { path: path.clone() });
                }
            }
        }
        if depth < usize::from(self.config.max_depth) {
            let ssid = crate::identity::mesh_ssid(&self.config.mesh_ssid_base, &self.ap_mac);
            let channel = self.current.as_ref().map_or(1, |c| c.channel);
            let _ = self.push_action(Action::OpenAp {
                ssid,
                bssid: self.ap_mac,
                channel,
                max_children: self.config.max_children,
                depth: u8::try_from(depth).unwrap_or(u8::MAX),
            });
            self.ap_open = true;
            self.ap_up = true;
        } else if self.ap_up {
            // Kept children from a shallower position cannot stay this deep.
            self.drop_children();
        }
        self.flush_outbox();
    }

    /// The path to the broker is gone. With joined children and a grace period, keep
    /// them (`Hold`) while we try our cached alternatives; otherwise close the AP (so
    /// the subtree re-forms elsewhere) and drop the children. Then try the remaining
    /// candidates.
    pub(super) fn lose_uplink(&mut self, now: Instant, why: &str) {
        let depth = self.path.len();
        self.acks.session_lost();
        let grace = self.config.timing.uplink_grace;
        let keep = grace > Duration::ZERO && self.children().next().is_some();
        self.counters.disconnects += 1;
        self.push_event(Event::Disconnected);
        if keep {
            self.log(
                Level::Warn,
                format_args!("{why}; keeping children for {grace} while re-joining"),
            );
            self.counters.holds += 1;
            self.hold_children();
            if self.grace_until.is_none() {
                self.grace_until = Some(now + grace);
            }
        } else {
            self.log(
                Level::Warn,
                format_args!("{why}; closing AP and re-joining"),
            );
            self.drop_children();
        }
        self.leave_uplink();
        self.recover_uplink(now, depth);
    }

    /// Closes whatever uplink we have, and forgets the path.
    pub(super) fn leave_uplink(&mut self) {
        match self.state {
            State::Root => {
                let _ = self.push_action(Action::DisconnectMqtt);
            }
            State::Mesh | State::Held => self.close_parent_link(),
            _ => {}
        }
        let _ = self.push_action(Action::Disassociate);
        self.ip = None;
        self.path.clear();
        self.reassert_at = None;
        self.state = State::Associating;
    }

    /// Stops taking children (the AP stays up for those we have) and tells the joined
    /// ones to hold on; pending joins are closed.
    fn hold_children(&mut self) {
        self.ap_open = false;
        if self.ap_up {
            // Still up for the kept children, but no longer a parent with a path.
            let _ = self.push_action(Action::AdmitStations(false));
        }
        for slot in 0..super::CHILD_SLOTS {
            // Cannot truncate: CHILD_SLOTS <= u8::MAX.
            let link = LinkId::Child(slot as u8);
            match self.children[slot].state {
                ChildState::Joined { .. } => {
                    let _ = self.send_frame(link, &Frame::Hold);
                }
                ChildState::Pending | ChildState::Challenged(_) => {
                    self.children[slot].state = ChildState::Free;
                    let _ = self.push_action(Action::CloseLink(link));
                }
                ChildState::Free => {}
            }
        }
    }

    /// Closes the AP and every child link, telling the children to re-join elsewhere.
    fn drop_children(&mut self) {
        self.ap_open = false;
        if self.ap_up {
            self.ap_up = false;
            let _ = self.push_action(Action::CloseAp);
        }
        for slot in 0..super::CHILD_SLOTS {
            if !matches!(self.children[slot].state, ChildState::Free) {
                self.children[slot].state = ChildState::Free;
                // Cannot truncate: CHILD_SLOTS <= u8::MAX.
                let link = LinkId::Child(slot as u8);
                self.routes.forget_slot(slot as u8);
                let _ = self.send_frame(
                    link,
                    &Frame::Leave {
                        reason: link::Reason::Going,
                    },
                );
                let _ = self.push_action(Action::CloseLink(link));
            }
        }
    }

    /// Our parent lost its uplink: keep the link (and hold our own children) until it
    /// resumes, or give up a link timeout after its grace period would have ended.
    pub(super) fn on_hold(&mut self, now: Instant) {
        if self.state == State::Held {
            return;
        }
        self.log(Level::Info, format_args!("parent lost its uplink; holding"));
        self.counters.disconnects += 1;
        self.push_event(Event::Disconnected);
        self.state = State::Held;
        // The path is kept (hidden while offline): `RESUME` must come from the same parent.
        self.reassert_at = None;
        let timing = self.config.timing;
        self.grace_until = Some(now + timing.uplink_grace + timing.link_timeout);
        if self.children().next().is_some() {
            self.hold_children();
        } else if self.ap_open {
            self.drop_children();
        }
        self.start_escape_scans(now);
    }

    /// Our parent is back online (`path` is its new path): online again, unless the
    /// new path makes us loop or sit too deep.
    pub(super) fn on_resume(&mut self, now: Instant, path: Path) {
        let parent = self
            .path
            .len()
            .checked_sub(2)
            .and_then(|i| self.path.get(i));
        let reason = if parent.is_none() || path.last() != parent {
            // The parent names itself last, as it did when we joined.
            Some(link::Reason::Protocol)
        } else if path.contains(&self.id) {
            Some(link::Reason::Loop)
        } else if path.len() + 1 > usize::from(self.config.max_depth) {
            Some(link::Reason::TooDeep)
        } else {
            None
        };
        if let Some(reason) = reason {
            self.log(
                Level::Warn,
                format_args!("leaving resumed parent: {reason}"),
            );
            let _ = self.send_frame(LinkId::Parent, &Frame::Leave { reason });
            self.give_up_parent(now);
            return;
        }
        self.path = path;
        if self.path.push(self.id.clone()).is_err() {
            // Unreachable: path.len() < max_depth <= MAX_PATH was checked above.
            self.give_up_parent(now);
            return;
        }
        self.log(Level::Info, format_args!("parent resumed"));
        self.state = State::Mesh;
        self.go_online(now);
    }

    /// The grace period ended: a held node leaves its parent; a relay that has not
    /// recovered releases its children.
    pub(super) fn on_grace_over(&mut self, now: Instant) {
        match self.state {
            State::Held => {
                self.log(
                    Level::Warn,
                    format_args!("parent did not recover in time; re-joining"),
                );
                let _ = self.send_frame(
                    LinkId::Parent,
                    &Frame::Leave {
                        reason: link::Reason::Going,
                    },
                );
                self.give_up_parent(now);
            }
            State::Root | State::Mesh => {}
            _ => {
                self.log(
                    Level::Warn,
                    format_args!("uplink not back within the grace period; releasing children"),
                );
                self.drop_children();
            }
        }
    }

    /// Leaves a held parent for good: children go too, then the candidates.
    fn give_up_parent(&mut self, now: Instant) {
        self.grace_until = None;
        self.drop_children();
        self.leave_uplink();
        self.try_next_candidate(now);
    }

    fn penalize(&mut self, now: Instant, bssid: crate::identity::Mac, for_: Duration) {
        self.penalties
            .retain(|(b, until)| *until > now && *b != bssid);
        if self.penalties.is_full() {
            self.penalties.remove(0);
        }
        let _ = self.penalties.push((bssid, now + for_));
    }
}
