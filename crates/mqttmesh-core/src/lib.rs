#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod identity;
pub mod link;
pub mod rand;
pub mod time;
pub mod topic;

pub use config::Config;
pub use identity::{Mac, NodeId};
pub use time::{Duration, Instant};
pub use topic::MsgType;
