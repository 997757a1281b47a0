//! The virtual-time simulator: the same core [`Node`](mqttmesh_core::Node) under a
//! discrete-event loop.
//!
//! Used by scenario tests (and, later, scale runs) to drive many nodes, a router and a
//! broker without sockets, threads or wall-clock time. A [`World`] owns a virtual
//! clock and a heap of timed events ordered by (time, sequence number), so the same seed
//! and the same test steps give the same run, event for event.
//!
//! # Run loop
//!
//! [`World::step`] pops the earliest event, hands it to the node it concerns through a
//! `handle_*` call, then drains that node as the core's contract asks: frames, actions
//! (scan, associate, MQTT, links, AP, restart — each carried out against the simulated
//! radio, network and broker, with [`SimTiming`] delays), application events, log lines;
//! finally it schedules `handle_timeout` at the node's `poll_timeout()`.
//!
//! # Model
//!
//! - radio: positions with log-distance path loss, or an explicit neighbour graph
//!   ([`radio`]); hidden mesh APs appear in scans only while open, with their depth;
//! - stations: association checks range, password and AP capacity;
//! - links: in-order byte streams with per-hop latency; closes follow the data in
//!   flight; cuts lose everything silently;
//! - broker: sessions with last wills, wildcard subscriptions, retained messages and an
//!   observer log ([`broker`]);
//! - faults: [`World::kill`], [`World::crash`], [`World::revive`],
//!   [`World::router_down`], [`World::cut_link`], byte injection and scripted probe
//!   peers ([`World::inject`], [`World::connect_probe`]).
//!
//! # Example
//!
//! ```
//! use mqttmesh_core::{Config, Duration};
//! use mqttmesh_sim::{World, ROUTER_PASSWORD, ROUTER_SSID};
//!
//! let config = Config::builder()
//!     .network(ROUTER_SSID, ROUTER_PASSWORD)
//!     .build()
//!     .expect("valid config");
//! // Three nodes in a line: only the first hears the router.
//! let mut world = World::line(3, &config, 7);
//! let deadline = world.within(Duration::from_secs(120));
//! assert!(world.run_until(deadline, World::all_online), "{}", world.report(10));
//! assert_eq!(world.node(2).depth(), Some(3));
//! // Its announcements are still travelling up: give them a moment.
//! world.run_for(Duration::from_secs(1));
//! assert_eq!(world.retained("esp8266-out/0A0003/info/available").as_deref(), Some(&b"online"[..]));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod events;
mod exec;
mod inspect;
mod links;
mod station;
mod world;

pub mod broker;
pub mod radio;

pub use broker::{Broker, Publication};
pub use events::SimTiming;
pub use inspect::ROUTER_PARENT;
pub use links::ProbeId;
pub use radio::{Endpoint, NodeIdx, Pos, Radio, ROUTER};
pub use world::{
    Received, World, FIRST_CHIP_ID, LOG_KEEP, ROUTER_BSSID, ROUTER_PASSWORD, ROUTER_SSID,
};
