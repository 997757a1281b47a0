//! Our AP's side: child links, the join handshake as parent, and relaying upstream.

use super::parent::frame_name;
use super::{Action, Challenged, ChildState, Level, LinkId, Node, CHILD_SLOTS};
use crate::identity::NodeId;
use crate::link::{self, Frame, JoinRequest, Reason, Transcript};
use crate::time::Instant;
use crate::topic::{Info, MsgType};

impl Node {
    /// A station connected to our mesh port. Returns the link ID to use for it, or
    /// `None` when the node cannot take it (AP closed, every slot busy): close it then.
    pub fn handle_child_connected(&mut self, now: Instant) -> Option<LinkId> {
        if !self.ap_open {
            self.counters.rejected_joins += 1;
            return None;
        }
        let Some(slot) = self
            .children
            .iter()
            .position(|c| matches!(c.state, ChildState::Free))
        else {
            self.counters.rejected_joins += 1;
            self.log(
                Level::Warn,
                format_args!("no free child slot; refusing connection"),
            );
            return None;
        };
        let child = &mut self.children[slot];
        child.state = ChildState::Pending;
        child.deframer.reset();
        child.since = now;
        child.last_rx = now;
        child.last_tx = now;
        child.summary = Default::default();
        child.caps = 0;
        // Cannot truncate: CHILD_SLOTS <= u8::MAX.
        Some(LinkId::Child(slot as u8))
    }

    pub(super) fn on_child_frame(&mut self, now: Instant, slot: u8, frame: Frame<'_>) {
        let Some(child) = self.children.get_mut(usize::from(slot)) else {
            return;
        };
        child.last_rx = now;
        let stage = match child.state {
            ChildState::Free => return,
            ChildState::Pending => Stage::AwaitRequest,
            ChildState::Challenged(_) => Stage::AwaitProof,
            ChildState::Joined { .. } => Stage::Joined,
        };
        match (stage, frame) {
            (Stage::AwaitRequest, Frame::JoinRequest(req)) => self.on_join_request(slot, &req),
            (Stage::AwaitProof, Frame::Proof { tag }) => self.on_proof(now, slot, &tag),
            (
                Stage::Joined,
                Frame::Publish {
                    id,
                    origin,
                    msg_type,
                    topic,
                    payload,
                },
            ) => self.on_upstream(now, slot, (origin, id), msg_type, topic, payload),
            (Stage::Joined, Frame::Subtree(s)) => self.on_child_subtree(now, slot, &s),
            (Stage::Joined, Frame::KeepAlive) => {
                let _ = self.send_frame(LinkId::Child(slot), &Frame::KeepAliveAck);
            }
            (Stage::Joined, Frame::KeepAliveAck) => {}
            (
                Stage::AwaitProof,
                Frame::Leave {
                    reason: Reason::Auth,
                },
            ) => {
                // Our challenge did not verify under its key: another mesh or a wrong
                // password on its side. The same failure as a bad proof, seen first by
                // the child because the parent proves first.
                self.counters.auth_failures += 1;
                self.counters.rejected_joins += 1;
                self.log(
                    Level::Warn,
                    format_args!(
                        "child {slot} could not verify our challenge (another mesh or a wrong mesh password)"
                    ),
                );
                let _ = self.push_action(Action::CloseLink(LinkId::Child(slot)));
                self.on_child_closed(now, slot);
            }
            (_, Frame::Leave { reason }) => {
                self.log(Level::Info, format_args!("child {slot} left: {reason}"));
                let _ = self.push_action(Action::CloseLink(LinkId::Child(slot)));
                self.on_child_closed(now, slot);
            }
            (stage, frame) => {
                self.counters.malformed += 1;
                if stage != Stage::Joined {
                    // Nothing but the next handshake frame before the join completes.
                    self.counters.handshake_failures += 1;
                }
                self.log(
                    Level::Warn,
                    format_args!(
                        "child {slot} sent {} while {}; closing",
                        frame_name(&frame),
                        stage.name()
                    ),
                );
                self.protocol_close(now, LinkId::Child(slot));
            }
        }
    }

    /// First handshake step: answer with our nonce, our ID and our proof of the key.
    /// The admission checks wait for the child's proof, so a stranger learns nothing
    /// about our path or our children.
    fn on_join_request(&mut self, slot: u8, req: &JoinRequest<'_>) {
        let Ok(id) = NodeId::new(req.node_id) else {
            self.reject(slot, Reason::Protocol);
            return;
        };
        if !self.connected() || !self.ap_open {
            self.log(
                Level::Info,
                format_args!("refusing join of {id}: not ready"),
            );
            self.reject(slot, Reason::NotReady);
            return;
        }
        let mut nonce = self.nonce();
        // We take SUBTREE frames: say so (the nonce is covered by both tags).
        link::subtree::mark_caps(&mut nonce, link::subtree::CAP_SUBTREE);
        let own = self.id.clone();
        let Ok(transcript) = Transcript::new(req, &nonce, own.as_str()) else {
            // Unreachable: a decoded request always encodes again.
            self.reject(slot, Reason::Protocol);
            return;
        };
        let challenge = Frame::Challenge {
            nonce,
            parent_id: own.as_str(),
            tag: self.join_key.parent_tag(&transcript),
        };
        if self.send_frame(LinkId::Child(slot), &challenge).is_err() {
            self.drop_child(slot);
            return;
        }
        self.children[usize::from(slot)].caps = link::subtree::caps_of(&req.nonce);
        self.children[usize::from(slot)].state = ChildState::Challenged(Challenged {
            id,
            transcript,
            subtree_height: req.subtree_height,
            firmware_id: req.firmware_id,
        });
    }

    /// Last handshake step: the child proved the key; admit it or say why not.
    fn on_proof(&mut self, now: Instant, slot: u8, tag: &link::Tag) {
        let Some(child) = self.children.get_mut(usize::from(slot)) else {
            return;
        };
        let ChildState::Challenged(ch) = core::mem::take(&mut child.state) else {
            return;
        };
        // Keep the slot busy while deciding (`reject` frees it).
        child.state = ChildState::Pending;
        let id = ch.id;
        if !self.join_key.verify_child(&ch.transcript, tag) {
            self.counters.auth_failures += 1;
            self.log(
                Level::Warn,
                format_args!("child {id} failed to prove the mesh password; refusing"),
            );
            self.reject(slot, Reason::Auth);
            return;
        }
        if let Some(reason) = self.admission(&id, ch.subtree_height) {
            self.log(Level::Warn, format_args!("refusing join of {id}: {reason}"));
            self.reject(slot, reason);
            return;
        }
        // The same node joining again means its old link is dead but not yet noticed.
        if let Some(old) = self
            .children
            .iter()
            .position(|c| matches!(&c.state, ChildState::Joined { id: o } if *o == id))
        {
            self.children[old].state = ChildState::Free;
            // Cannot truncate: CHILD_SLOTS <= u8::MAX.
            let old = old as u8;
            self.routes.forget_slot(old);
            self.forget_summary(old);
            let _ = self.push_action(Action::CloseLink(LinkId::Child(old)));
        }
        let path = self.path.clone();
        if self
            .send_frame(LinkId::Child(slot), &Frame::JoinAccept { path })
            .is_err()
        {
            self.drop_child(slot);
            return;
        }
        self.log(
            Level::Info,
            format_args!("child {id} joined (slot {slot}, fw {:04X})", ch.firmware_id),
        );
        self.children[usize::from(slot)].state = ChildState::Joined { id };
        self.note_fullness(self.now);
        self.subtree_changed(now);
    }

    /// Why an authenticated child may not join, if it may not.
    fn admission(&self, id: &NodeId, subtree_height: u8) -> Option<Reason> {
        // A node joining again still holds its old, not yet noticed dead slot: that one
        // is replaced, so it does not count against the limit.
        let joined = self.children().filter(|c| *c != id).count();
        if !self.connected() || !self.ap_open {
            Some(Reason::NotReady)
        } else if self.path.contains(id) {
            Some(Reason::Loop)
        } else if self.path.len() + 1 + usize::from(subtree_height)
            > usize::from(self.config.max_depth)
        {
            Some(Reason::TooDeep)
        } else if joined >= usize::from(self.config.max_children) {
            Some(Reason::Full)
        } else {
            None
        }
    }

    fn drop_child(&mut self, slot: u8) {
        let _ = self.push_action(Action::CloseLink(LinkId::Child(slot)));
        if let Some(child) = self.children.get_mut(usize::from(slot)) {
            child.state = ChildState::Free;
        }
    }

    pub(super) fn reject(&mut self, slot: u8, reason: Reason) {
        self.counters.rejected_joins += 1;
        let _ = self.send_frame(LinkId::Child(slot), &Frame::JoinReject { reason });
        let _ = self.push_action(Action::CloseLink(LinkId::Child(slot)));
        if let Some(child) = self.children.get_mut(usize::from(slot)) {
            child.state = ChildState::Free;
        }
    }

    /// A child's message towards the broker: only our mesh's topic space is relayed.
    fn on_upstream(
        &mut self,
        now: Instant,
        slot: u8,
        (origin, id): (&str, u16),
        msg_type: MsgType,
        topic: &str,
        payload: &[u8],
    ) {
        let allowed = topic.starts_with(self.config.out_prefix.as_str())
            || topic.starts_with(self.config.in_prefix.as_str());
        if !allowed || topic.contains(['+', '#']) {
            self.counters.publish_rejected += 1;
            self.log(
                Level::Warn,
                format_args!("child {slot}: refusing publish outside the mesh topics"),
            );
            return;
        }
        self.learn_route(origin, slot, now);
        match self.relay_up(origin, id, topic, payload, msg_type) {
            Ok(()) => self.counters.relayed_up += 1,
            Err(e) => {
                self.counters.publish_rejected += 1;
                self.log(
                    Level::Debug,
                    format_args!("child {slot}: relay dropped: {e}"),
                );
            }
        }
    }

    /// A child link is gone: publish `offline` for the child on its behalf.
    pub(super) fn on_child_closed(&mut self, now: Instant, slot: u8) {
        let Some(child) = self.children.get_mut(usize::from(slot)) else {
            return;
        };
        let state = core::mem::take(&mut child.state);
        self.routes.forget_slot(slot);
        self.note_fullness(self.now);
        self.forget_summary(slot);
        if let ChildState::Joined { id } = state {
            self.subtree_changed(now);
            self.log(Level::Info, format_args!("child {id} lost"));
            if let Ok(topic) =
                crate::topic::out_node(&self.config.out_prefix, &id, Info::Available.subtopic())
            {
                // Untracked (never re-sent later): a delayed `offline` could overwrite the
                // `online` the child announces meanwhile through another parent.
                let _ = self.send_up(&topic, super::OFFLINE.as_bytes(), MsgType::RetainedQos1);
            }
        }
    }

    /// Stalled joins, keep-alives and silent children.
    pub(super) fn check_children(&mut self, now: Instant) {
        let timing = self.config.timing;
        for slot in 0..CHILD_SLOTS {
            // Cannot truncate: CHILD_SLOTS <= u8::MAX.
            let link = LinkId::Child(slot as u8);
            let child = &mut self.children[slot];
            match child.state {
                ChildState::Free => {}
                ChildState::Pending | ChildState::Challenged(_) => {
                    if now >= child.since + timing.connect_timeout {
                        let stage = if matches!(child.state, ChildState::Pending) {
                            "before its join request"
                        } else {
                            "before its proof"
                        };
                        child.state = ChildState::Free;
                        self.counters.rejected_joins += 1;
                        self.counters.handshake_failures += 1;
                        self.log(
                            Level::Warn,
                            format_args!("{link:?}: join stalled {stage}; closing"),
                        );
                        let _ = self.push_action(Action::CloseLink(link));
                    }
                }
                ChildState::Joined { .. } => {
                    if now >= child.last_rx + timing.link_timeout {
                        self.log(Level::Warn, format_args!("{link:?}: silent; closing"));
                        let _ = self.push_action(Action::CloseLink(link));
                        self.on_child_closed(now, slot as u8);
                    } else if now >= child.last_tx + timing.keepalive_interval {
                        child.last_tx = now;
                        let _ = self.send_frame(link, &Frame::KeepAlive);
                    }
                }
            }
        }
    }
}

/// Where a child link is, for the frame dispatch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitRequest,
    AwaitProof,
    Joined,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::AwaitRequest => "awaiting its join request",
            Stage::AwaitProof => "awaiting its proof",
            Stage::Joined => "joined",
        }
    }
}
