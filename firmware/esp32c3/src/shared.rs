//! What the tasks share: the one [`Node`], the wake-up signal of the node loop, and the
//! command channels from the node loop to the WiFi, MQTT and link tasks.
//!
//! Every task that learns something (a scan, bytes on a link, a broker message) locks
//! the node, calls its `handle_*`, and signals [`WAKE`]; the node loop (`main.rs`) then
//! drains the node's outputs and routes them back to the tasks through the channels.

use core::cell::RefCell;

use embassy_sync::blocking_mutex::Mutex;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use embassy_sync::signal::Signal;
use heapless::{String, Vec};
use mqttmesh_core::link::MAX_FRAME;
use mqttmesh_core::node::{CHILD_SLOTS, Publish};
use mqttmesh_core::{Instant, Mac, Node};

pub type M = CriticalSectionRawMutex;

/// Children served at once: the acceptors on the mesh port (`links::child_task`).
pub const ACCEPTORS: usize = 5;
/// Link channel index: 0 is the parent, `1 + slot` a child. The node hands out the
/// lowest free slot, so with at most [`ACCEPTORS`] children open the slots stay below
/// [`ACCEPTORS`] (checked where a child connects).
pub const LINKS: usize = 1 + ACCEPTORS;
const _: () = assert!(ACCEPTORS <= CHILD_SLOTS);

/// The node, once built (it lives in [`NODE_CELL`]; about 100 KiB, so in `.bss`, not
/// in flash as an initialised `.data` image would be).
pub static NODE: Mutex<M, RefCell<Option<&'static mut Node>>> = Mutex::new(RefCell::new(None));
/// Storage of the node.
pub static NODE_CELL: static_cell::StaticCell<Node> = static_cell::StaticCell::new();
/// Something was handed to the node: drain it.
pub static WAKE: Signal<M, ()> = Signal::new();

/// The chip clock as the core's instant.
pub fn now() -> Instant {
    Instant::from_millis(embassy_time::Instant::now().as_millis())
}

/// Runs `f` on the node (a no-op before it exists) and wakes the node loop.
pub fn with_node<R: Default>(f: impl FnOnce(&mut Node, Instant) -> R) -> R {
    let r = NODE.lock(|cell| match cell.borrow_mut().as_mut() {
        Some(node) => f(node, now()),
        None => R::default(),
    });
    WAKE.signal(());
    r
}

/// Commands for the WiFi task.
#[derive(Debug)]
pub enum WifiCmd {
    /// Every channel (`None`) or one.
    Scan(Option<u8>),
    Associate {
        bssid: Mac,
        ssid: String<32>,
        password: String<64>,
        channel: u8,
    },
    Disassociate,
    OpenAp {
        ssid: String<32>,
        channel: u8,
        max_children: u8,
    },
    CloseAp,
}
pub static WIFI_CMD: Channel<M, WifiCmd, 4> = Channel::new();

/// Commands for the broker session task.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum MqttCmd {
    Connect {
        client_id: String<40>,
        will_topic: mqttmesh_core::topic::Topic,
    },
    Disconnect,
    Subscribe {
        filter: mqttmesh_core::topic::Topic,
    },
    Publish(Publish),
}
pub static MQTT_CMD: Channel<M, MqttCmd, 4> = Channel::new();

/// One encoded mesh frame for a link task.
pub type FrameBuf = Vec<u8, MAX_FRAME>;
/// Frames queued per link.
pub static LINK_TX: [Channel<M, FrameBuf, 1>; LINKS] = [const { Channel::new() }; LINKS];
/// The node asked to close a link.
pub static LINK_CLOSE: [Signal<M, ()>; LINKS] = [const { Signal::new() }; LINKS];
/// The node asked for the parent link; carries the parent's AP address.
pub static PARENT_OPEN: Signal<M, core::net::Ipv4Addr> = Signal::new();
/// Whether the hidden AP admits children (the mesh port answers only then).
pub static AP_OPEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
