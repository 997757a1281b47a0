//! The monitor's screen state and key handling, apart from any terminal so it can be
//! tested: which node is selected, how the table is sorted, the event log, and the
//! restart confirmation.

use std::collections::VecDeque;

use mqttmesh_host::view::command::{Command, Target};
use mqttmesh_host::view::{NodeEntry, Snapshot, ViewEvent};

/// Lines kept in the event log.
pub const LOG_LINES: usize = 500;

/// Table columns, in display order; the sort key cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Node ID.
    Id,
    /// Firmware ID and version.
    Firmware,
    /// IP address.
    Ip,
    /// Uplink RSSI.
    Rssi,
    /// Depth in the tree.
    Depth,
    /// Online or not.
    Online,
    /// Time since the last message.
    LastSeen,
    /// Messages per second.
    Rate,
}

impl Column {
    /// All columns in display order.
    pub const ALL: [Column; 8] = [
        Column::Id,
        Column::Firmware,
        Column::Ip,
        Column::Rssi,
        Column::Depth,
        Column::Online,
        Column::LastSeen,
        Column::Rate,
    ];

    /// Header text.
    pub fn title(self) -> &'static str {
        match self {
            Column::Id => "ID",
            Column::Firmware => "firmware",
            Column::Ip => "IP",
            Column::Rssi => "RSSI",
            Column::Depth => "depth",
            Column::Online => "online",
            Column::LastSeen => "last seen",
            Column::Rate => "msg/s",
        }
    }

    fn next(self) -> Column {
        let i = Column::ALL.iter().position(|c| *c == self).unwrap_or(0);
        Column::ALL[(i + 1) % Column::ALL.len()]
    }
}

/// A key the monitor understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    /// Select the previous node.
    Up,
    /// Select the next node.
    Down,
    /// A character key.
    Char(char),
    /// Escape.
    Esc,
}

/// What a key asks the monitor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Nothing beyond redrawing.
    None,
    /// Send this command to the nodes.
    Send(Command),
    /// Leave.
    Quit,
}

/// A restart waiting for `y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confirm {
    /// Whom the restart is for.
    pub target: Target,
}

/// Everything the screen shows besides the snapshot.
#[derive(Debug)]
pub struct State {
    /// Sort column.
    pub sort: Column,
    /// Descending order.
    pub descending: bool,
    /// Selected node ID.
    pub selected: Option<String>,
    /// Event log, newest last.
    pub log: VecDeque<String>,
    /// A restart awaiting confirmation.
    pub confirm: Option<Confirm>,
    /// Whether the broker connection is up.
    pub broker_up: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            sort: Column::Depth,
            descending: false,
            selected: None,
            log: VecDeque::new(),
            confirm: None,
            broker_up: true,
        }
    }
}

impl State {
    /// The snapshot's nodes in table order.
    pub fn rows<'a>(&self, snapshot: &'a Snapshot) -> Vec<&'a NodeEntry> {
        let mut rows: Vec<&NodeEntry> = snapshot.node_list.iter().collect();
        rows.sort_by(|a, b| {
            let ord = match self.sort {
                Column::Id => a.id.cmp(&b.id),
                Column::Firmware => firmware(a).cmp(&firmware(b)),
                Column::Ip => a.ip.cmp(&b.ip),
                Column::Rssi => a.rssi.cmp(&b.rssi),
                Column::Depth => a.depth.unwrap_or(u8::MAX).cmp(&b.depth.unwrap_or(u8::MAX)),
                Column::Online => b.online.cmp(&a.online),
                Column::LastSeen => a.last_seen_ms.cmp(&b.last_seen_ms),
                Column::Rate => a.msgs_per_sec.total_cmp(&b.msgs_per_sec),
            }
            .then_with(|| a.id.cmp(&b.id));
            if self.descending {
                ord.reverse()
            } else {
                ord
            }
        });
        rows
    }

    /// Index of the selected node in `rows`, selecting the first when none is.
    pub fn selected_index(&mut self, rows: &[&NodeEntry]) -> Option<usize> {
        let found = self
            .selected
            .as_ref()
            .and_then(|id| rows.iter().position(|r| &r.id == id));
        match found {
            Some(i) => Some(i),
            None => {
                self.selected = rows.first().map(|r| r.id.clone());
                rows.first().map(|_| 0)
            }
        }
    }

    /// Handles a key against the current table order.
    pub fn on_key(&mut self, key: Key, snapshot: &Snapshot) -> Intent {
        if let Some(confirm) = self.confirm.take() {
            return match key {
                Key::Char('y') | Key::Char('Y') => {
                    self.push_log(format!("restart sent to {}", target_name(&confirm.target)));
                    Intent::Send(Command::Restart(confirm.target))
                }
                _ => {
                    self.push_log("restart cancelled".into());
                    Intent::None
                }
            };
        }
        let rows = self.rows(snapshot);
        let index = self.selected_index(&rows);
        let selected = index.and_then(|i| rows.get(i)).map(|r| r.id.clone());
        match key {
            Key::Char('q') | Key::Esc => Intent::Quit,
            Key::Up | Key::Char('k') => {
                if let Some(i) = index {
                    self.selected = rows.get(i.saturating_sub(1)).map(|r| r.id.clone());
                }
                Intent::None
            }
            Key::Down | Key::Char('j') => {
                if let Some(i) = index {
                    self.selected = rows
                        .get((i + 1).min(rows.len().saturating_sub(1)))
                        .map(|r| r.id.clone());
                }
                Intent::None
            }
            Key::Char('s') => {
                self.sort = self.sort.next();
                Intent::None
            }
            Key::Char('S') => {
                self.descending = !self.descending;
                Intent::None
            }
            Key::Char('p') => match selected {
                Some(id) => {
                    self.push_log(format!("ping sent to {id}"));
                    Intent::Send(Command::Ping(Target::Node(id)))
                }
                None => Intent::None,
            },
            Key::Char('P') => {
                self.push_log("ping sent to all".into());
                Intent::Send(Command::Ping(Target::All))
            }
            Key::Char('f') => {
                self.push_log("fw query sent".into());
                Intent::Send(Command::FwQuery)
            }
            Key::Char('r') => {
                if let Some(id) = selected {
                    self.confirm = Some(Confirm {
                        target: Target::Node(id),
                    });
                }
                Intent::None
            }
            Key::Char('R') => {
                self.confirm = Some(Confirm {
                    target: Target::All,
                });
                Intent::None
            }
            _ => Intent::None,
        }
    }

    /// Adds view events to the log.
    pub fn on_events(&mut self, events: &[ViewEvent]) {
        for e in events {
            self.push_log(describe(e));
        }
    }

    /// Adds a line to the log.
    pub fn push_log(&mut self, line: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }
}

/// `1337 v0.1`, or empty.
pub fn firmware(n: &NodeEntry) -> String {
    match (&n.firmware_id, &n.firmware_version) {
        (Some(id), Some(v)) => format!("{id} v{v}"),
        (Some(id), None) => id.clone(),
        _ => String::new(),
    }
}

/// `node 00A1B2` or `all nodes`.
pub fn target_name(t: &Target) -> String {
    match t {
        Target::Node(id) => format!("node {id}"),
        Target::All => "all nodes".into(),
    }
}

/// One log line for a view event.
pub fn describe(e: &ViewEvent) -> String {
    serde_json::to_value(e)
        .ok()
        .and_then(|v| {
            let obj = v.as_object()?;
            let kind = obj.get("event")?.as_str()?.to_string();
            let rest: Vec<String> = obj
                .iter()
                .filter(|(k, _)| k.as_str() != "event")
                .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
                .collect();
            Some(format!("{kind} {}", rest.join(" ")))
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mqttmesh_host::view::MeshView;

    /// A root, its child and an offline node, as nodes publish them.
    pub(crate) fn snapshot() -> Snapshot {
        let mut view = MeshView::new("esp8266-out/");
        let now = std::time::Instant::now();
        let msgs: [(&str, &str); 9] = [
            ("esp8266-out/00000A/info/available", "online"),
            ("esp8266-out/00000A/info/MAC_hosted_AP", "AA:00:00:00:00:0A"),
            ("esp8266-out/00000A/info/connectedTo", "02:00:00:00:00:01"),
            ("esp8266-out/00000B/info/available", "online"),
            ("esp8266-out/00000B/info/connectedTo", "AA:00:00:00:00:0A"),
            ("esp8266-out/00000B/info/RSSI", "-61"),
            (
                "esp8266-out/00000B/fw",
                "ChipID:00000B FirmwareID:1337 v0.2 IP:10.1.1.2 mesh",
            ),
            ("esp8266-out/00000C/info/available", "offline"),
            ("esp8266-out/00000C/info/connectedTo", "AA:00:00:00:00:0A"),
        ];
        for (t, p) in msgs {
            view.apply(now, t, p.as_bytes());
        }
        view.snapshot(now)
    }

    #[test]
    fn sorting_and_selection_follow_the_keys() {
        let snap = snapshot();
        let mut st = State::default();
        let ids = |st: &State| {
            st.rows(&snap)
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>()
        };
        // By depth: the root first, the offline node (no depth) last.
        assert_eq!(ids(&st), ["00000A", "00000B", "00000C"]);
        assert_eq!(st.on_key(Key::Down, &snap), Intent::None);
        assert_eq!(st.selected.as_deref(), Some("00000B"));
        st.on_key(Key::Char('S'), &snap);
        assert_eq!(ids(&st), ["00000C", "00000B", "00000A"]);
        st.on_key(Key::Char('s'), &snap); // depth -> online
        assert_eq!(st.sort, Column::Online);
        assert_eq!(st.on_key(Key::Char('q'), &snap), Intent::Quit);
    }

    #[test]
    fn ping_goes_to_the_selection_and_restart_needs_a_yes() {
        let snap = snapshot();
        let mut st = State::default();
        st.on_key(Key::Down, &snap);
        assert_eq!(
            st.on_key(Key::Char('p'), &snap),
            Intent::Send(Command::Ping(Target::Node("00000B".into())))
        );
        assert_eq!(st.on_key(Key::Char('r'), &snap), Intent::None);
        assert!(st.confirm.is_some());
        // Anything but `y` cancels.
        assert_eq!(st.on_key(Key::Char('n'), &snap), Intent::None);
        assert!(st.confirm.is_none());
        st.on_key(Key::Char('R'), &snap);
        assert_eq!(
            st.on_key(Key::Char('y'), &snap),
            Intent::Send(Command::Restart(Target::All))
        );
        assert!(st
            .log
            .iter()
            .any(|l| l.contains("restart sent to all nodes")));
    }
}
