//! Frames from our parent, and the health of the parent link.

use super::{Level, LinkId, Node, State};
use crate::link::Frame;
use crate::time::Instant;

impl Node {
    pub(super) fn on_parent_frame(&mut self, now: Instant, frame: Frame<'_>) {
        self.parent.last_rx = now;
        match (self.state, frame) {
            (State::Joining, Frame::JoinAccept { path }) => self.on_join_accept(now, path),
            (State::Joining, Frame::JoinReject { reason }) => self.on_join_reject(now, reason),
            (State::Mesh, Frame::Deliver { topic, payload }) => {
                self.on_downstream(now, topic, payload)
            }
            // Sent before the parent noticed its loss: nowhere to act on it now.
            (State::Held, Frame::Deliver { .. }) => {}
            (State::Mesh | State::Held, Frame::Ack { origin, id }) => self.on_ack(origin, id),
            (State::Mesh | State::Held, Frame::Hold) => self.on_hold(now),
            (State::Held, Frame::Resume { path }) => self.on_resume(now, path),
            (_, Frame::KeepAlive) => {
                let _ = self.send_frame(LinkId::Parent, &Frame::KeepAliveAck);
            }
            (_, Frame::KeepAliveAck) => {}
            (_, Frame::Leave { reason }) => {
                self.log(Level::Info, format_args!("parent left: {reason}"));
                let _ = self.push_action(super::Action::CloseLink(LinkId::Parent));
                self.on_parent_closed(now);
            }
            (state, frame) => {
                self.counters.malformed += 1;
                self.log(
                    Level::Warn,
                    format_args!(
                        "parent sent {} while {state:?}; closing",
                        frame_name(&frame)
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
        Frame::Publish { .. } => "Publish",
        Frame::Deliver { .. } => "Deliver",
        Frame::Ack { .. } => "Ack",
        Frame::Hold => "Hold",
        Frame::Resume { .. } => "Resume",
        Frame::KeepAlive => "KeepAlive",
        Frame::KeepAliveAck => "KeepAliveAck",
        Frame::Leave { .. } => "Leave",
    }
}
