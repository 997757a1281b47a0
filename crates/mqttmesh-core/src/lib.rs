#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod identity;
pub mod link;
pub mod node;
pub mod ota;
pub mod rand;
pub mod time;
pub mod topic;
pub mod uplink;

pub use config::Config;
pub use identity::{Mac, NodeId};
pub use node::{Action, Event, LinkId, Node};
pub use time::{Duration, Instant};
pub use topic::MsgType;
