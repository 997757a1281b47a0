//! The tokio node runtime: one task per node drives a core [`Node`] over real TCP
//! sockets on loopback, the emulated [`Radio`], and a rumqttc broker session.
//!
//! The loop is the core's run-loop contract: after every input, drain transmits,
//! actions, events and log lines; then wait for the next input or `poll_timeout()`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use mqttmesh_core::link::MAX_FRAME;
use mqttmesh_core::node::{
    Action, AssocError, Counters, Event, Level, LinkId, Node, OtaExchange, Parent,
};
use mqttmesh_core::MsgType;
use mqttmesh_core::{Config, Instant, Mac};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::app::App;
use crate::link::{self, Airtime, LinkHandle, LinkStream, OpenError};
use crate::meshtls::{HandshakeError, MeshTls, MeshTlsCounters};
use crate::mqtt::Session;
use crate::ota::{NodeFirmware, OtaSpec};
use crate::radio::{Ap, Radio};
use mqttmesh_core::ota::Reply;

/// What reaches a node task.
#[derive(Debug)]
pub(crate) enum Input {
    ScanDone(u64),
    /// The AP's answer to an association (the 802.11 stage).
    AssocAnswer(u64, Mac, String),
    /// The address after a successful answer.
    AssocReady(u64, Mac, Ipv4Addr),
    Mqtt(u64, MqttInput),
    LinkOpened(u64, Result<LinkStream, OpenError>),
    LinkClosed(LinkId, u64),
    ChildAccepted(LinkStream),
    /// A connection to the mesh port that failed the TLS handshake, and from where.
    ChildRefused(SocketAddr, HandshakeError),
    /// OTA replies (and whether to install) once the flash work is done, for the boot
    /// that asked.
    OtaDone(u64, Vec<Reply>, bool),
    /// Our AP turned this station away because it is full (reported by the radio).
    StationRefused(Mac),
}

/// Broker session events.
#[derive(Debug)]
pub(crate) enum MqttInput {
    Connected,
    /// Topic, payload, retain flag.
    Message(String, Vec<u8>, bool),
    Disconnected(String),
    /// The broker acknowledged the publication of this token.
    Acked(u32),
}

/// Control of a running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Crash: sockets drop without goodbye, the broker publishes the last will.
    Kill,
    /// Stop or resume the demo app's periodic publications.
    Publishing(bool),
    /// The router vanished: a node on it loses its broker connection, as its WiFi
    /// association (already ended in the radio) would take the TCP connection with it.
    RouterLost,
    /// Publish `count` messages of `len` bytes on `<out><ID>/bench` at once, as fast
    /// as the node accepts them (for benchmarks: `examples/bench_relay.rs`). Each
    /// payload starts with the node's running message number (8 bytes, big-endian,
    /// when `len` ≥ 8); the rest is filler. Refused messages are counted in
    /// `publish_rejected`.
    Burst {
        /// Messages to publish.
        count: u32,
        /// Payload length, bytes (at most the link's `MAX_PAYLOAD`).
        len: u16,
        /// QoS and retain of every message.
        msg_type: MsgType,
    },
}

/// Subtopic of [`Control::Burst`] messages.
pub const BENCH: &str = "bench";

/// What the outside world can see of a node.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// Node ID.
    pub id: String,
    /// Chip ID.
    pub chip_id: u32,
    /// The task is running.
    pub alive: bool,
    /// Path to the broker up.
    pub online: bool,
    /// Depth (root = 1) while online.
    pub depth: Option<u8>,
    /// `"router"`, a parent node ID, or `None`.
    pub parent: Option<String>,
    /// Joined children.
    pub children: Vec<String>,
    /// Counters.
    pub counters: Counters,
    /// Demo-app publications accepted by the node.
    pub published: u64,
    /// The demo LED.
    pub led: bool,
    /// Messages the application received.
    pub received: u64,
    /// Restarts since the task started (Restart commands, installs, failed trials).
    pub restarts: u64,
    /// Version the node runs (from its image, or the configured one).
    pub firmware_version: String,
    /// Why the last broker session failed or ended, until the next one is up.
    pub broker_error: Option<String>,
    /// Mesh TLS handshakes and refusals (all zero with mesh TLS off).
    pub mesh_tls: MeshTlsCounters,
}

/// Everything one node task needs.
#[derive(Debug)]
pub struct NodeSpec {
    /// Index in the radio world.
    pub index: usize,
    /// Chip ID.
    pub chip_id: u32,
    /// Node configuration.
    pub config: Config,
    /// Seed for the node's generator.
    pub seed: u64,
    /// Broker address (reachable only through the router).
    pub broker: SocketAddr,
    /// TLS to the broker, made from `config.mqtt_tls` (`None`: plain MQTT).
    pub mqtt_tls: Option<crate::mqtt_tls::ClientTls>,
    /// TLS on mesh links (`None`: plain TCP).
    pub mesh_tls: Option<MeshTls>,
    /// Demo-app publication interval.
    pub publish_interval: std::time::Duration,
    /// Flash, bootloader and OTA (`None`: OTA messages are ignored).
    pub ota: Option<OtaSpec>,
}

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    /// Index in the radio world.
    pub index: usize,
    mesh_addr: SocketAddr,
    status: Arc<Mutex<NodeStatus>>,
    control: mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl NodeHandle {
    /// Starts a node task.
    pub async fn start(
        spec: NodeSpec,
        radio: Arc<Radio>,
        epoch: tokio::time::Instant,
    ) -> std::io::Result<NodeHandle> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let mesh_addr = listener.local_addr()?;
        let status = Arc::new(Mutex::new(NodeStatus {
            chip_id: spec.chip_id,
            alive: true,
            ..NodeStatus::default()
        }));
        let (control, control_rx) = mpsc::unbounded_channel();
        let index = spec.index;
        let task = tokio::spawn(run(
            spec,
            radio,
            epoch,
            listener,
            status.clone(),
            control_rx,
        ));
        Ok(NodeHandle {
            index,
            mesh_addr,
            status,
            control,
            task,
        })
    }

    /// Where the node serves its mesh port (children connect here).
    pub fn mesh_addr(&self) -> SocketAddr {
        self.mesh_addr
    }

    /// A snapshot of the node.
    pub fn status(&self) -> NodeStatus {
        lock(&self.status).clone()
    }

    /// Sends a control command.
    pub fn control(&self, c: Control) {
        let _ = self.control.send(c);
    }

    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Driver {
    spec: NodeSpec,
    radio: Arc<Radio>,
    epoch: tokio::time::Instant,
    node: Node,
    inputs: mpsc::UnboundedSender<Input>,
    links: HashMap<LinkId, LinkHandle>,
    airtime: Arc<Airtime>,
    session: Option<Session>,
    listen: SocketAddr,
    gen: u64,
    assoc_gen: u64,
    parent_gen: u64,
    scan_gen: u64,
    /// The running scan covers this channel only (`Action::ScanChannel`).
    scan_channel: Option<u8>,
    app: App,
    status: Arc<Mutex<NodeStatus>>,
    restarts: u64,
    firmware: Option<NodeFirmware>,
    trial_deadline: Option<tokio::time::Instant>,
    restart_pending: bool,
    boot_gen: u64,
    tls_counters: MeshTlsCounters,
    burst_seq: u64,
}

async fn run(
    spec: NodeSpec,
    radio: Arc<Radio>,
    epoch: tokio::time::Instant,
    listener: TcpListener,
    status: Arc<Mutex<NodeStatus>>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let (inputs, mut rx) = mpsc::unbounded_channel();
    let refused = inputs.clone();
    radio.on_station_refused(spec.index, move |station| {
        // The task may be gone (killed): nobody to tell.
        let _ = refused.send(Input::StationRefused(station));
    });
    let listen = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let acceptor = tokio::spawn(link::accept(
        listener,
        spec.mesh_tls.clone(),
        inputs.clone(),
    ));
    let now = Instant::from_millis(epoch.elapsed().as_millis() as u64);
    let (firmware, config) = boot_firmware(&spec);
    let node = Node::new(config, spec.chip_id, spec.seed, "Power on", now);
    let app = App::new(spec.publish_interval);
    let mut d = Driver {
        spec,
        radio,
        epoch,
        node,
        inputs,
        links: HashMap::new(),
        airtime: Airtime::new(),
        session: None,
        listen,
        gen: 0,
        assoc_gen: 0,
        parent_gen: 0,
        scan_gen: 0,
        scan_channel: None,
        app,
        status,
        restarts: 0,
        firmware,
        trial_deadline: None,
        restart_pending: false,
        boot_gen: 0,
        tls_counters: MeshTlsCounters::default(),
        burst_seq: 0,
    };
    d.arm_trial();
    loop {
        d.drain();
        d.flush_links();
        d.publish_status();
        let deadline = d
            .node
            .poll_timeout()
            .map(|t| d.epoch + std::time::Duration::from_millis(t.millis()));
        let app_due = d.app.next_due(d.node.connected());
        tokio::select! {
            c = control.recv() => match c {
                Some(Control::Kill) | None => break,
                Some(Control::Publishing(on)) => d.app.set_enabled(on),
                Some(Control::RouterLost) => {
                    if let Some(s) = d.session.take() {
                        s.abort();
                        let now = d.now();
                        d.node.handle_mqtt_disconnected(now);
                    }
                }
                Some(Control::Burst { count, len, msg_type }) => d.burst(count, len, msg_type),
            },
            input = rx.recv() => match input {
                Some(input) => d.handle(input),
                None => break,
            },
            read = link::read_any(&mut d.links) => match read {
                link::Read::Data(link, gen, len) => {
                    link::with_read(len, |data| d.link_data(link, gen, data))
                }
                link::Read::Closed(link, gen) => d.handle(Input::LinkClosed(link, gen)),
            },
            _ = sleep_opt(deadline) => {
                let now = d.now();
                d.node.handle_timeout(now);
            }
            _ = sleep_opt(app_due) => {
                d.app.tick(&mut d.node);
            }
            _ = sleep_opt(d.trial_deadline) => {
                d.trial_deadline = None;
                if d.firmware.as_ref().is_some_and(|f| f.on_trial()) && !d.node.connected() {
                    tracing::warn!(target: "mqttmesh::ota", node = %d.node.id(), "trial image did not reach the broker in time; restarting into the previous one");
                    d.restart();
                }
            }
        }
    }
    // Crash: every socket drops without goodbye.
    acceptor.abort();
    d.links.clear();
    if let Some(s) = d.session.take() {
        s.abort();
    }
    d.radio.remove_node(d.spec.index);
    let mut st = lock(&d.status);
    st.alive = false;
    st.online = false;
    st.depth = None;
    st.parent = None;
    st.children.clear();
}

/// Boots the node's firmware (when it has flash) and the configuration it runs with:
/// the version is the running image's, when its slot holds one.
fn boot_firmware(spec: &NodeSpec) -> (Option<NodeFirmware>, Config) {
    let mut config = spec.config.clone();
    let Some(ota) = &spec.ota else {
        return (None, config);
    };
    match NodeFirmware::boot(ota, spec.chip_id, &spec.config) {
        Ok(f) => {
            if let Some(v) = f.version() {
                config.firmware_version.clear();
                let _ = config.firmware_version.push_str(v);
            }
            (Some(f), config)
        }
        Err(e) => {
            tracing::error!(target: "mqttmesh::ota", "chip {:06X}: {e}; running without flash", spec.chip_id);
            (None, config)
        }
    }
}

async fn sleep_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn now(&self) -> Instant {
        Instant::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    fn later(&self, after: std::time::Duration, input: Input) {
        let tx = self.inputs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(input);
        });
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        let index = self.spec.index;
        self.note_tls(&input);
        match input {
            Input::ScanDone(gen) if gen == self.scan_gen => {
                let mut entries = self.radio.scan(index);
                if let Some(channel) = self.scan_channel {
                    entries.retain(|e| e.channel == channel);
                }
                self.node.handle_scan_done(now, &entries);
            }
            Input::AssocAnswer(gen, bssid, password) if gen == self.assoc_gen => {
                // Associated now (the slot is ours), or refused: a refusal is known at
                // once, a success waits for its address.
                let station = self.node.station_mac();
                match self.radio.associate(index, station, bssid, &password) {
                    Ok(ip) => {
                        let timing = self.radio.timing();
                        let rest = timing.associate.saturating_sub(timing.associate_fail);
                        self.later(rest, Input::AssocReady(gen, bssid, ip));
                    }
                    Err(e) => self.node.handle_associated(now, bssid, Err(e)),
                }
            }
            Input::AssocReady(gen, bssid, ip) if gen == self.assoc_gen => {
                // The AP may have closed (or the router gone) meanwhile.
                let result = match self.radio.associated_with(index, bssid) {
                    true => Ok(ip),
                    false => Err(AssocError::NotFound),
                };
                self.node.handle_associated(now, bssid, result);
            }
            Input::Mqtt(gen, ev) if self.session.as_ref().is_some_and(|s| s.gen == gen) => match ev
            {
                MqttInput::Connected => {
                    lock(&self.status).broker_error = None;
                    self.node.handle_mqtt_connected(now)
                }
                MqttInput::Acked(token) => self.node.handle_mqtt_acked(now, token),
                MqttInput::Message(topic, payload, false) => {
                    self.node.handle_mqtt_message(now, &topic, &payload)
                }
                MqttInput::Message(topic, payload, true) => {
                    self.node.handle_mqtt_retained(now, &topic, &payload)
                }
                MqttInput::Disconnected(why) => {
                    tracing::info!(target: "mqttmesh::node", node = %self.node.id(), "broker session: {why}");
                    lock(&self.status).broker_error = Some(why);
                    self.session = None;
                    self.node.handle_mqtt_disconnected(now);
                }
            },
            Input::LinkOpened(gen, Ok(stream)) if gen == self.parent_gen => {
                self.attach(LinkId::Parent, stream);
                self.node.handle_link_opened(now, LinkId::Parent);
            }
            Input::LinkOpened(gen, Err(e)) if gen == self.parent_gen => {
                if let OpenError::Connect(e) = e {
                    tracing::info!(target: "mqttmesh::node", node = %self.node.id(), "parent link: {e}");
                }
                // A refused handshake is a failed join: the node tries its next
                // candidate or backs off.
                self.node.handle_link_closed(now, LinkId::Parent);
            }
            Input::LinkClosed(link, gen) if self.link_gen(link) == Some(gen) => {
                self.links.remove(&link);
                self.node.handle_link_closed(now, link);
            }
            Input::OtaDone(boot, replies, install) if boot == self.boot_gen => {
                self.answer_ota(replies, install)
            }
            Input::ChildAccepted(stream) => match self.node.handle_child_connected(now) {
                Some(link) => self.attach(link, stream),
                None => drop(stream),
            },
            // Whichever boot hears it: the node ignores it unless its AP is up.
            Input::StationRefused(station) => self.node.handle_station_refused(now, station),
            // Closed, counted and logged by `note_tls`; the node never saw it.
            Input::ChildRefused(..) => {}
            // Stale: an earlier scan, association, session or link.
            _ => {}
        }
    }

    /// Bytes read from a link (by the node task itself: `link::read_any`).
    fn link_data(&mut self, link: LinkId, gen: u64, data: &[u8]) {
        if self.link_gen(link) != Some(gen) {
            return;
        }
        let mut offset = 0;
        while offset < data.len() {
            let now = self.now();
            offset += self.node.handle_link_data(now, link, &data[offset..]);
            if offset < data.len() {
                self.drain();
            }
        }
    }

    /// Counts and logs mesh TLS handshakes, stale or not: each happened.
    fn note_tls(&mut self, input: &Input) {
        let (c, id) = (&mut self.tls_counters, self.node.id().as_str());
        match input {
            Input::LinkOpened(_, Ok(LinkStream::Tls(_))) => c.parent_handshakes += 1,
            Input::LinkOpened(_, Err(OpenError::Tls(addr, e))) => c.parent_refused(id, *addr, e),
            Input::ChildAccepted(LinkStream::Tls(_)) => c.child_handshakes += 1,
            Input::ChildRefused(peer, e) => c.child_refused(id, *peer, e),
            _ => {}
        }
    }

    /// Starts the I/O tasks of `link` over `stream`.
    fn attach(&mut self, link: LinkId, stream: LinkStream) {
        let gen = self.next_gen();
        let seed = self.spec.seed ^ gen;
        let medium = link::Medium {
            owner: self.spec.index,
            timing: self.radio.timing(),
            airtime: self.airtime.clone(),
            air: self.radio.air().clone(),
        };
        let handle = link::spawn(link, gen, stream, medium, seed);
        self.links.insert(link, handle);
    }

    fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    fn link_gen(&self, link: LinkId) -> Option<u64> {
        self.links.get(&link).map(|h| h.gen)
    }

    /// Hands every link's queued frames to its writer: once per input, so a batch of
    /// frames read together leaves together (see `link::Batch`).
    fn flush_links(&mut self) {
        for h in self.links.values_mut() {
            h.flush();
        }
    }

    /// Moves the node's transmits to their links; whether there were any. Each frame is
    /// polled straight into the batch of the link the one before went to (a relay's
    /// frames mostly go one way): no copy. One for another link is copied there.
    fn transmit(&mut self) -> bool {
        // On the stack: drain runs after every input, so no allocation per call.
        let mut buf = [0u8; MAX_FRAME];
        let mut to: Option<LinkId> = None;
        let mut any = false;
        loop {
            let polled = match to.and_then(|l| self.links.get_mut(&l)) {
                Some(h) => loop {
                    let room = h.frame_room();
                    match self.node.poll_transmit(room) {
                        None => break None,
                        Some((link, len)) if Some(link) == to => {
                            any = true;
                            h.commit(len);
                        }
                        Some((link, len)) => {
                            buf[..len].copy_from_slice(&room[..len]);
                            break Some((link, len));
                        }
                    }
                },
                None => self.node.poll_transmit(&mut buf),
            };
            let Some((link, len)) = polled else {
                return any;
            };
            any = true;
            if let Some(h) = self.links.get_mut(&link) {
                h.send(&buf[..len]);
            }
            to = Some(link);
        }
    }

    /// The run-loop contract: transmits, actions, events, logs, until all are empty.
    fn drain(&mut self) {
        loop {
            let mut busy = self.transmit();
            while let Some(action) = self.node.poll_action() {
                busy = true;
                self.execute(action);
            }
            while let Some(event) = self.node.poll_event() {
                busy = true;
                match &event {
                    Event::Message { .. } => lock(&self.status).received += 1,
                    Event::Connected => self.confirm_firmware(),
                    Event::Ota {
                        exchange,
                        command,
                        payload,
                    } => {
                        self.on_ota(*exchange, command, payload);
                        continue;
                    }
                    Event::Disconnected => {}
                }
                self.app.handle(&mut self.node, event);
            }
            while let Some(line) = self.node.poll_log() {
                let id = self.node.id();
                match line.level {
                    Level::Warn => {
                        tracing::warn!(target: "mqttmesh::node", node = %id, "{}", line.text)
                    }
                    Level::Info => {
                        tracing::info!(target: "mqttmesh::node", node = %id, "{}", line.text)
                    }
                    Level::Debug => {
                        tracing::debug!(target: "mqttmesh::node", node = %id, "{}", line.text)
                    }
                }
            }
            if !busy {
                if std::mem::take(&mut self.restart_pending) {
                    // The replies are queued on the links and the session: now reboot.
                    self.reboot(true);
                    continue;
                }
                return;
            }
        }
    }

    fn execute(&mut self, action: Action) {
        let index = self.spec.index;
        let timing = self.radio.timing();
        match action {
            Action::Scan => {
                self.scan_gen += 1;
                self.scan_channel = None;
                self.later(timing.scan, Input::ScanDone(self.scan_gen));
            }
            Action::ScanChannel(channel) => {
                self.scan_gen += 1;
                self.scan_channel = Some(channel);
                let took = timing.scan_channel.min(timing.scan);
                self.later(took, Input::ScanDone(self.scan_gen));
            }
            Action::Associate {
                bssid, password, ..
            } => {
                self.assoc_gen += 1;
                self.later(
                    timing.associate_fail.min(timing.associate),
                    Input::AssocAnswer(self.assoc_gen, bssid, password.to_string()),
                );
            }
            Action::Disassociate => {
                self.assoc_gen += 1;
                self.radio.disassociate(index);
            }
            Action::ConnectMqtt {
                client_id,
                will_topic,
            } => {
                let gen = self.next_gen();
                if self.radio.broker_reachable(index) {
                    self.session = Some(Session::open(
                        &self.spec.config,
                        self.spec.broker,
                        self.spec.mqtt_tls.as_ref(),
                        &client_id,
                        &will_topic,
                        gen,
                        self.inputs.clone(),
                    ));
                } else {
                    // No route to the broker from here: fail at once, as a refused TCP
                    // connect would.
                    self.session = None;
                    let now = self.now();
                    self.node.handle_mqtt_disconnected(now);
                }
            }
            Action::DisconnectMqtt => {
                if let Some(s) = self.session.take() {
                    s.close();
                }
            }
            Action::Subscribe { filter } => {
                if let Some(s) = &self.session {
                    s.subscribe(&filter);
                }
            }
            Action::Publish(p) => {
                let ok = self.session.as_ref().is_some_and(|s| s.publish(&p));
                if !ok {
                    tracing::warn!(target: "mqttmesh::node", node = %self.node.id(), "publish to {} dropped: session busy or gone", p.topic);
                }
            }
            Action::OpenParentLink => {
                self.parent_gen += 1;
                let gen = self.parent_gen;
                match self.radio.parent_addr(index) {
                    Some(addr) => {
                        let tx = self.inputs.clone();
                        let tls = self.spec.mesh_tls.clone();
                        tokio::spawn(async move {
                            let _ =
                                tx.send(Input::LinkOpened(gen, link::open_parent(addr, tls).await));
                        });
                    }
                    None => {
                        let now = self.now();
                        self.node.handle_link_closed(now, LinkId::Parent);
                    }
                }
            }
            Action::CloseLink(link) => {
                if link == LinkId::Parent {
                    self.parent_gen += 1;
                }
                self.links.remove(&link);
            }
            Action::OpenAp {
                ssid,
                bssid,
                channel,
                max_children,
                depth,
            } => {
                self.radio.open_ap(
                    index,
                    Ap {
                        bssid,
                        ssid: ssid.to_string(),
                        password: self.spec.config.mesh_password.to_string(),
                        channel,
                        max_stations: max_children,
                        depth,
                        addr: self.listen,
                    },
                );
            }
            Action::AdmitStations(room) => self.radio.admit_stations(index, room),
            Action::CloseAp => {
                self.radio.close_ap(index);
                self.links.retain(|l, _| *l == LinkId::Parent);
            }
            Action::Restart => self.restart(),
        }
    }

    /// Publishes a [`Control::Burst`], draining after each publication as the run-loop
    /// contract asks (so the node's queues never fill).
    fn burst(&mut self, count: u32, len: u16, msg_type: MsgType) {
        let mut payload = vec![b'.'; usize::from(len)];
        for _ in 0..count {
            if let Some(seq) = payload.get_mut(..8) {
                seq.copy_from_slice(&self.burst_seq.to_be_bytes());
            }
            self.burst_seq += 1;
            // A refusal is counted by the node (`publish_rejected`).
            let _ = self.node.publish(BENCH, &payload, msg_type);
            self.drain();
        }
    }

    /// Like a chip reset: everything drops, a fresh `Node` starts.
    fn restart(&mut self) {
        self.reboot(false);
    }

    /// Like a chip reset. `planned` (an OTA install) lets the broker session send what
    /// is queued and close cleanly first, as the firmware does before it reboots;
    /// otherwise the session drops like a crash and the broker publishes the will.
    fn reboot(&mut self, planned: bool) {
        self.boot_gen += 1;
        self.links.clear();
        if let Some(s) = self.session.take() {
            if planned {
                s.close();
            } else {
                s.abort();
            }
        }
        self.radio.remove_node(self.spec.index);
        self.scan_gen += 1;
        self.assoc_gen += 1;
        self.parent_gen += 1;
        self.restarts += 1;
        let now = self.now();
        // Drop the old firmware handles first: the boot reads the flash afresh.
        self.firmware = None;
        let (firmware, config) = boot_firmware(&self.spec);
        self.firmware = firmware;
        self.node = Node::new(
            config,
            self.spec.chip_id,
            self.spec.seed.wrapping_add(self.restarts),
            "Restart",
            now,
        );
        self.arm_trial();
    }

    /// Starts the trial timer when the running image is on trial.
    fn arm_trial(&mut self) {
        self.trial_deadline = match (&self.firmware, &self.spec.ota) {
            (Some(f), Some(spec)) if f.on_trial() => {
                Some(tokio::time::Instant::now() + spec.trial_timeout)
            }
            _ => None,
        };
    }

    fn confirm_firmware(&mut self) {
        if let Some(f) = &mut self.firmware {
            if f.confirm() {
                self.trial_deadline = None;
                tracing::info!(target: "mqttmesh::ota", node = %self.node.id(), "new image confirmed: {}", f.version().unwrap_or("?"));
            }
        }
    }

    /// An OTA message for this node: the receiver writes, answers, maybe installs.
    fn on_ota(&mut self, exchange: OtaExchange, command: &str, payload: &[u8]) {
        let Some(firmware) = &mut self.firmware else {
            tracing::debug!(target: "mqttmesh::ota", node = %self.node.id(), "no flash: OTA {command} ignored");
            return;
        };
        let mut replies = Vec::new();
        let install = firmware
            .handle(exchange, command, payload, |r| replies.push(r))
            .is_some();
        let busy = firmware.take_busy();
        if busy.is_zero() {
            self.answer_ota(replies, install);
        } else {
            // The flash is busy erasing or writing: answer when it is done.
            self.later(busy, Input::OtaDone(self.boot_gen, replies, install));
        }
    }

    /// Publishes OTA replies; restarts into a new image after them.
    fn answer_ota(&mut self, replies: Vec<Reply>, install: bool) {
        for r in replies {
            if let Err(e) = self.node.publish(&r.subtopic, &r.payload, MsgType::Qos1) {
                tracing::warn!(target: "mqttmesh::ota", node = %self.node.id(), "cannot answer {}: {e}", r.subtopic);
            }
        }
        if install {
            tracing::info!(target: "mqttmesh::ota", node = %self.node.id(), "installing the new image; restarting");
            self.restart_pending = true;
        }
    }

    /// Runs after every input: strings are rebuilt only when they changed (no
    /// allocation per relayed batch).
    fn publish_status(&self) {
        let mut st = lock(&self.status);
        let id = self.node.id().as_str();
        if st.id != id {
            st.id = id.to_string();
        }
        st.online = self.node.connected();
        st.depth = self.node.depth();
        let parent = self.node.parent();
        let parent = match &parent {
            Parent::None => None,
            Parent::Router { .. } => Some("router"),
            Parent::Node { id, .. } => Some(id.as_str()),
        };
        if st.parent.as_deref() != parent {
            st.parent = parent.map(str::to_string);
        }
        let children = || self.node.children().map(|c| c.as_str());
        if !children().eq(st.children.iter().map(String::as_str)) {
            st.children = children().map(str::to_string).collect();
        }
        st.counters = *self.node.counters();
        st.published = self.app.published();
        st.led = self.app.led();
        st.restarts = self.restarts;
        let version = self.node.config().firmware_version.as_str();
        if st.firmware_version != version {
            st.firmware_version = version.to_string();
        }
        st.mesh_tls = self.tls_counters;
    }
}
