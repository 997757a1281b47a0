//! The demo application every simulated node runs, in the spirit of the original's
//! hello-world example: publish a counter every few seconds on `<out><ID>/counter`, and
//! switch a "LED" on a message to `<in><ID>/led` (`on`, `off`, anything else toggles),
//! reporting the new state on `<out><ID>/led`.

use std::time::Duration;

use mqttmesh_core::node::{Event, Node};
use mqttmesh_core::MsgType;
use tokio::time::Instant;

/// Subtopic of the counter.
pub const COUNTER: &str = "counter";
/// Subtopic of the LED.
pub const LED: &str = "led";

/// Demo-app state of one node.
#[derive(Debug)]
pub struct App {
    interval: Duration,
    next: Instant,
    enabled: bool,
    seq: u64,
    published: u64,
    led: bool,
}

impl App {
    /// An app publishing every `interval` (zero: never).
    pub fn new(interval: Duration) -> App {
        App {
            interval,
            next: Instant::now() + interval,
            enabled: !interval.is_zero(),
            seq: 0,
            published: 0,
            led: false,
        }
    }

    /// Turns periodic publishing on or off.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on && !self.interval.is_zero();
    }

    /// When the next publication is due, if one is.
    pub fn next_due(&self, connected: bool) -> Option<Instant> {
        (self.enabled && connected).then_some(self.next)
    }

    /// Publishes the counter: `<seq>`.
    pub fn tick(&mut self, node: &mut Node) {
        self.next = Instant::now() + self.interval;
        if !node.connected() {
            return;
        }
        let payload = self.seq.to_string();
        if node
            .publish(COUNTER, payload.as_bytes(), MsgType::Qos1)
            .is_ok()
        {
            self.seq += 1;
            self.published += 1;
        }
    }

    /// Reacts to an application event.
    pub fn handle(&mut self, node: &mut Node, event: Event) {
        if let Event::Message { subtopic, payload } = event {
            if subtopic.as_str() == LED {
                self.led = match payload.as_slice() {
                    b"on" => true,
                    b"off" => false,
                    _ => !self.led,
                };
                let state: &[u8] = if self.led { b"on" } else { b"off" };
                let _ = node.publish(LED, state, MsgType::Qos0);
            }
        }
    }

    /// Counter publications the node accepted.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// The LED.
    pub fn led(&self) -> bool {
        self.led
    }
}
