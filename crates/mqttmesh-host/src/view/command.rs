//! Commands a monitor sends to nodes (`../shared/spec/compat.md`, "Topics a node
//! reacts to"): Ping, a `fw` query, Restart.

/// Whom a command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One node by ID.
    Node(String),
    /// Every node (`broadcast`).
    All,
}

impl Target {
    fn level(&self) -> &str {
        match self {
            Target::Node(id) => id,
            Target::All => "broadcast",
        }
    }
}

/// `<in><id>/Ping` or `<in>broadcast/Ping`: nodes answer on `<out><id>/Ping`.
pub fn ping_topic(in_prefix: &str, target: &Target) -> String {
    format!("{in_prefix}{}/Ping", target.level())
}

/// `<in><id>/Restart` or `<in>broadcast/Restart`; publish it without retain (nodes
/// ignore a retained Restart).
pub fn restart_topic(in_prefix: &str, target: &Target) -> String {
    format!("{in_prefix}{}/Restart", target.level())
}

/// `<in>fw/mqttmesh`: every node answers on `<out><id>/fw`.
pub fn fw_query_topic(in_prefix: &str) -> String {
    format!("{in_prefix}fw/mqttmesh")
}

/// A command to nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `Ping`: the nodes answer on `<out><id>/Ping`.
    Ping(Target),
    /// A `fw` query: every node answers on `<out><id>/fw`.
    FwQuery,
    /// `Restart`.
    Restart(Target),
}

impl Command {
    /// The topic to publish on (without retain) and the payload.
    pub fn message(&self, in_prefix: &str) -> (String, Vec<u8>) {
        match self {
            Command::Ping(t) => (ping_topic(in_prefix, t), Vec::new()),
            Command::FwQuery => (fw_query_topic(in_prefix), Vec::new()),
            Command::Restart(t) => (restart_topic(in_prefix, t), Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_topics() {
        let one = Target::Node("00A1B2".into());
        assert_eq!(ping_topic("esp8266-in/", &one), "esp8266-in/00A1B2/Ping");
        assert_eq!(
            restart_topic("esp8266-in/", &Target::All),
            "esp8266-in/broadcast/Restart"
        );
        assert_eq!(fw_query_topic("esp8266-in/"), "esp8266-in/fw/mqttmesh");
        let (topic, payload) = Command::Ping(Target::All).message("in/");
        assert_eq!((topic.as_str(), payload.len()), ("in/broadcast/Ping", 0));
    }
}
