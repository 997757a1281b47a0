//! Frames from our parent, and the health of the parent link.

use super::{Handshake, Level, LinkId, Node, State};
use crate::link::Frame;
use crate::time::Instant;

impl Node {
    pub(super) fn on_parent_frame(&mut self, now: Instant, frame: Frame<'_>) {
        self.parent.last_rx = now;
        let stage = match (&self.parent.handshake, self.state) {
            (Handshake::AwaitChallenge { .. }, State::Joining) => Stage::AwaitChallenge,
            (Handshake::AwaitAccept { .. }, State::Joining) => Stage::AwaitAccept,
            (_, State::Mesh) => Stage::Joined,
            (_, State::Held) => Stage::Held,
            _ => Stage::Other,
        };
        match (stage, frame) {
            (
                Stage::AwaitChallenge,
                Frame::Challenge {
                    nonce,
                    parent_id,
                    tag,
                },
            ) => {
                self.note_parent_caps(&nonce);
                self.on_challenge(now, &nonce, parent_id, &tag)
            }
            (Stage::AwaitAccept, Frame::JoinAccept { path }) => {
                self.on_attaching();
                self.on_join_accept(now, path)
            }
            // A refusal may come before or after the challenge (version, not ready).
            (Stage::AwaitChallenge | Stage::AwaitAccept, Frame::JoinReject { reason }) => {
                self.on_join_reject(now, reason)
            }
            (Stage::Joined, Frame::Deliver { topic, payload }) => {
                self.on_downstream(now, topic, payload)
            }
            // Sent before the parent noticed its loss: nowhere to act on it now.
            (Stage::Held, Frame::Deliver { .. }) => {}
            (Stage::Joined | Stage::Held, Frame::Ack { origin, id }) => self.on_ack(origin, id),
            (Stage::Joined | Stage::Held, Frame::Hold) => self.on_hold(now),
            (Stage::Held, Frame::Resume { path }) => {
                self.on_attaching();
                self.on_resume(now, path)
            }
            (Stage::Joined, Frame::MakeRoom) => self.on_make_room(now),
            // A held node has no uplink to move: the parent asks again later.
            (Stage::Held, Frame::MakeRoom) => self.counters.rebalance_declined += 1,
            // Keep-alives only once joined: before that, only the next handshake frame.
            (Stage::Joined | Stage::Held, Frame::KeepAlive) => {
                let _ = self.send_frame(LinkId::Parent, &Frame::KeepAliveAck);
            }
            (Stage::Joined | Stage::Held, Frame::KeepAliveAck) => {}
            (_, Frame::Leave { reason }) => {
                self.log(Level::Info, format_args!("parent left: {reason}"));
                let _ = self.push_action(super::Action::CloseLink(LinkId::Parent));
                self.on_parent_closed(now);
            }
            (stage, frame) => {
                self.counters.malformed += 1;
                if matches!(stage, Stage::AwaitChallenge | Stage::AwaitAccept) {
                    self.counters.handshake_failures += 1;
                }
                self.log(
                    Level::Warn,
                    format_args!(
                        "parent sent {} while {}; closing",
                        frame_name(&frame),
                        stage.name()
                    ),
                );
                self.protocol_close(now, LinkId::Parent);
            }
        }
    }

    /// Keep-alive and silence detection on the parent link.
    pub(super) fn check_parent_link(&mut self, now: Instant) {
        if !self.parent.open {
            return;
        }
        let timing = self.config.timing;
        if now >= self.parent.last_rx + timing.link_timeout {
            self.log(
                Level::Warn,
                format_args!("parent silent for {}", timing.link_timeout),
            );
            let _ = self.push_action(super::Action::CloseLink(LinkId::Parent));
            self.on_parent_closed(now);
        } else if matches!(self.state, State::Mesh | State::Held)
            && now >= self.parent.last_tx + timing.keepalive_interval
        {
            // Only once joined: until its answer, a joining child sends nothing but its
            // join request (docs/PROTOCOL.md "Join handshake").
            self.parent.last_tx = now;
            let _ = self.send_frame(LinkId::Parent, &Frame::KeepAlive);
        }
    }
}

/// A frame's name for log lines.
pub(super) fn frame_name(frame: &Frame<'_>) -> &'static str {
    match frame {
        Frame::JoinRequest(_) => "JoinRequest",
        Frame::JoinAccept { .. } => "JoinAccept",
        Frame::JoinReject { .. } => "JoinReject",
        Frame::Challenge { .. } => "Challenge",
        Frame::Proof { .. } => "Proof",
        Frame::Publish { .. } => "Publish",
        Frame::Deliver { .. } => "Deliver",
        Frame::Ack { .. } => "Ack",
        Frame::Hold => "Hold",
        Frame::Resume { .. } => "Resume",
        Frame::Subtree(_) => "Subtree",
        Frame::KeepAlive => "KeepAlive",
        Frame::KeepAliveAck => "KeepAliveAck",
        Frame::Leave { .. } => "Leave",
        Frame::MakeRoom => "MakeRoom",
    }
}

/// Where the parent link is, for the frame dispatch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitChallenge,
    AwaitAccept,
    Joined,
    Held,
    Other,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::AwaitChallenge => "awaiting the challenge",
            Stage::AwaitAccept => "awaiting the join answer",
            Stage::Joined => "joined",
            Stage::Held => "held",
            Stage::Other => "not joining",
        }
    }
}
