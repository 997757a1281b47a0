//! Drawing the monitor: tree, node table, event log, key help.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use mqttmesh_host::view::{render, NodeEntry, Snapshot};

use super::state::{firmware, target_name, Column, State};

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, snapshot: &Snapshot, state: &mut State) {
    let [top, log, help] = Layout::vertical([
        Constraint::Min(8),
        Constraint::Length(9),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let [tree, table] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(top);
    draw_tree(frame, tree, snapshot);
    draw_table(frame, table, snapshot, state);
    draw_log(frame, log, state);
    draw_help(frame, help, snapshot, state);
}

fn draw_tree(frame: &mut Frame<'_>, area: Rect, snapshot: &Snapshot) {
    let text = render::text(snapshot);
    let lines: Vec<Line<'_>> = text
        .lines()
        .map(|l| {
            let offline = snapshot
                .node_list
                .iter()
                .any(|n| !n.online && l.contains(&format!("─ {} ", n.id)));
            let style = if offline {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            };
            Line::styled(l.to_string(), style)
        })
        .collect();
    let title = format!(
        " tree: {} nodes, {} online, depth {} ",
        snapshot.nodes, snapshot.online, snapshot.max_depth
    );
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_table(frame: &mut Frame<'_>, area: Rect, snapshot: &Snapshot, state: &mut State) {
    let rows = state.rows(snapshot);
    let selected = state.selected_index(&rows);
    let header = Row::new(Column::ALL.iter().map(|c| {
        let mark = if *c == state.sort {
            if state.descending {
                " ▼"
            } else {
                " ▲"
            }
        } else {
            ""
        };
        Cell::from(format!("{}{mark}", c.title()))
    }))
    .style(Style::new().add_modifier(Modifier::BOLD));
    let body: Vec<Row<'_>> = rows.iter().map(|n| row(n)).collect();
    let widths = [
        Constraint::Length(10),
        Constraint::Length(14),
        Constraint::Length(15),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(6),
    ];
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title(" nodes (s: sort, S: reverse) "))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut table_state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, area, &mut table_state);
}

fn row(n: &NodeEntry) -> Row<'static> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let style = if n.online {
        Style::new()
    } else {
        Style::new().fg(Color::Red)
    };
    Row::new(vec![
        Cell::from(n.id.clone()),
        Cell::from(firmware(n)),
        Cell::from(opt(&n.ip).to_string()),
        Cell::from(n.rssi.map_or("-".into(), |r| r.to_string())),
        Cell::from(n.depth.map_or("-".into(), |d| d.to_string())),
        Cell::from(if n.online { "yes" } else { "no" }),
        Cell::from(
            n.last_seen_ms
                .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
        ),
        Cell::from(format!("{:.1}", n.msgs_per_sec)),
    ])
    .style(style)
}

fn draw_log(frame: &mut Frame<'_>, area: Rect, state: &State) {
    let fit = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line<'_>> = state
        .log
        .iter()
        .skip(state.log.len().saturating_sub(fit))
        .map(|l| Line::raw(l.clone()))
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" events ")),
        area,
    );
}

fn draw_help(frame: &mut Frame<'_>, area: Rect, snapshot: &Snapshot, state: &State) {
    let line = match &state.confirm {
        Some(c) => Line::from(Span::styled(
            format!(
                " Restart {}? y to confirm, any other key cancels ",
                target_name(&c.target)
            ),
            Style::new().fg(Color::Black).bg(Color::Yellow),
        )),
        None => {
            let broker = if state.broker_up {
                Span::raw(format!(" broker up, {} messages ", snapshot.stats.messages))
            } else {
                Span::styled(
                    " broker DOWN ",
                    Style::new().fg(Color::White).bg(Color::Red),
                )
            };
            Line::from(vec![
                broker,
                Span::raw(
                    "│ q quit  ↑↓ select  p ping  P ping all  f fw query  r restart  R restart all",
                ),
            ])
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;

    fn screen(state: &mut State) -> String {
        let snapshot = crate::tui::state::tests::snapshot();
        let mut terminal = Terminal::new(TestBackend::new(140, 30)).expect("test terminal");
        terminal.draw(|f| draw(f, &snapshot, state)).expect("draws");
        let buffer = terminal.backend().buffer().clone();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn shows_tree_table_log_and_help() {
        let mut state = State::default();
        state.push_log("online id=00000B".into());
        let text = screen(&mut state);
        assert!(text.contains("router"), "{text}");
        assert!(text.contains("└─ 00000A"), "{text}");
        assert!(text.contains("1337 v0.2"), "{text}");
        assert!(text.contains("-61"), "{text}");
        assert!(text.contains("online id=00000B"), "{text}");
        assert!(text.contains("q quit"), "{text}");
        assert!(text.contains("3 nodes, 2 online"), "{text}");
    }

    #[test]
    fn asks_before_restarting() {
        let mut state = State::default();
        state.confirm = Some(crate::tui::state::Confirm {
            target: mqttmesh_host::view::command::Target::All,
        });
        assert!(screen(&mut state).contains("Restart all nodes? y to confirm"));
    }
}
