#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod app;
mod events;
mod exec;
mod faults;
mod inspect;
mod invariants;
mod links;
mod neighbours;
mod starved;
mod station;
mod world;

pub mod broker;
pub mod radio;

pub use app::{MessageStats, COUNTER};
pub use broker::{Broker, Publication};
pub use events::SimTiming;
pub use inspect::ROUTER_PARENT;
pub use invariants::{Violation, SWEEP};
pub use links::{ProbeId, Tapped};
pub use radio::{Endpoint, NodeIdx, Pos, Radio, ROUTER};
pub use starved::Starved;
pub use world::{
    Received, World, FIRST_CHIP_ID, LOG_KEEP, ROUTER_BSSID, ROUTER_PASSWORD, ROUTER_SSID,
};
