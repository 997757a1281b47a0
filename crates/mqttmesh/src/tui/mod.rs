//! The interactive `mqttmesh monitor`: a live terminal view (ratatui) of the tree, a
//! sortable node table and an event log, with keys to ping, query firmware and
//! restart nodes. Built on [`crate::monitor::Monitor`], only from what nodes publish.

mod draw;
pub mod state;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use tokio::sync::mpsc;

use crate::monitor::{Monitor, Update};
use state::{Intent, Key, State};

/// Redraw at least this often (last-seen times and rates move with time).
const TICK: Duration = Duration::from_millis(250);

/// Runs the terminal UI until `q`, Esc or Ctrl-C (or `duration`).
pub async fn run(mut monitor: Monitor, duration: Option<Duration>) -> Result<()> {
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    // Terminal input is blocking: read it on its own thread.
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(200)) {
            Ok(true) => match event::read() {
                Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                    let key = match k.code {
                        KeyCode::Up => Key::Up,
                        KeyCode::Down => Key::Down,
                        KeyCode::Esc => Key::Esc,
                        KeyCode::Char('c')
                            if k.modifiers.contains(event::KeyModifiers::CONTROL) =>
                        {
                            Key::Esc
                        }
                        KeyCode::Char(c) => Key::Char(c),
                        _ => continue,
                    };
                    if keys_tx.send(key).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            },
            Ok(false) => {
                if keys_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let mut terminal = ratatui::init();
    let result = ui_loop(&mut terminal, &mut monitor, &mut keys, duration).await;
    ratatui::restore();
    monitor.close().await;
    result
}

async fn ui_loop(
    terminal: &mut ratatui::DefaultTerminal,
    monitor: &mut Monitor,
    keys: &mut mpsc::UnboundedReceiver<Key>,
    duration: Option<Duration>,
) -> Result<()> {
    let mut state = State::default();
    state.push_log(format!("connected; {} nodes known", monitor.view().len()));
    let end = duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(TICK);
    loop {
        let snapshot = monitor.view().snapshot(Instant::now());
        terminal
            .draw(|f| draw::draw(f, &snapshot, &mut state))
            .context("cannot draw to the terminal")?;
        if end.is_some_and(|e| tokio::time::Instant::now() >= e) {
            return Ok(());
        }
        tokio::select! {
            update = monitor.next() => match update {
                Some(Update::Events(events)) => state.on_events(&events),
                Some(Update::Broker { up, detail }) => {
                    state.broker_up = up;
                    state.push_log(format!("broker {}: {detail}", if up { "up" } else { "down" }));
                }
                None => anyhow::bail!("the connection to the broker ended"),
            },
            key = keys.recv() => {
                let Some(key) = key else { return Ok(()) };
                match state.on_key(key, &snapshot) {
                    Intent::Quit => return Ok(()),
                    Intent::Send(command) => {
                        if let Err(e) = monitor.send(&command).await {
                            state.push_log(format!("send failed: {e:#}"));
                        }
                    }
                    Intent::None => {}
                }
            }
            _ = tick.tick() => {}
        }
    }
}
