//! Keys: a pure mapping from a key press and the state to a new state and, maybe, a
//! [`Command`] for the loop to carry out.

use std::net::IpAddr;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use knock_ipc::Request;

use super::state::{AttemptEnd, Overlay, Pane, State};

/// Something only the loop can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    /// Revoke a grant on the host that holds it.
    Revoke {
        host: usize,
        addr: IpAddr,
        door: String,
    },
    /// Reload one host's configuration (`Some(index)`) or every host's (`None`).
    Reload {
        host: Option<usize>,
    },
}

impl Command {
    /// The request to send for it, if any.
    pub fn request(&self) -> Option<Request> {
        match self {
            Command::Quit => None,
            Command::Revoke { addr, door, .. } => Some(Request::Revoke {
                addr: *addr,
                door: Some(door.clone()),
            }),
            Command::Reload { .. } => Some(Request::Reload),
        }
    }
}

/// Key bindings, for the footer and the help overlay: (keys, what they do).
pub const KEYS: &[(&str, &str)] = &[
    ("Tab / Shift-Tab", "next / previous pane"),
    ("1 2 3 4", "attempts, grants, events, doors"),
    ("j k / Up Down", "select a row"),
    ("g G / Home End", "first / last row"),
    ("PgUp PgDn", "ten rows up / down"),
    ("r", "revoke grant or OPEN attempt (y/n)"),
    ("R", "reload the configuration"),
    ("/", "filter rows by address or door"),
    ("Esc", "clear the filter, close a popup"),
    ("p", "pause / resume the event log"),
    ("?", "this help"),
    ("q / Ctrl-C", "quit"),
];

const PAGE: usize = 10;

impl State {
    /// Applies a key press. Returns what the loop must do, if anything.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C')) {
            return Some(Command::Quit);
        }
        // No Alt bindings: Alt+x is what a terminal reports for Esc quickly followed by x.
        if key.modifiers.contains(KeyModifiers::ALT) && matches!(key.code, KeyCode::Char(_)) {
            let esc = self.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
            if esc.is_some() {
                return esc;
            }
            return self.on_key(KeyEvent::new(
                key.code,
                key.modifiers.difference(KeyModifiers::ALT),
            ));
        }
        if let Some(overlay) = self.overlay.take() {
            return self.on_overlay_key(overlay, key);
        }
        if self.editing_filter {
            self.on_filter_key(key, ctrl);
            return None;
        }
        // A key press acknowledges the last notice.
        if self.notice.as_ref().is_some_and(|n| n.at_ms.is_some()) {
            self.notice = None;
        }
        match key.code {
            KeyCode::Char('q') if !ctrl => return Some(Command::Quit),
            KeyCode::Tab => self.focus(self.focus.next()),
            KeyCode::BackTab => self.focus(self.focus.prev()),
            KeyCode::Char('1') => self.focus(Pane::Attempts),
            KeyCode::Char('2') => self.focus(Pane::Grants),
            KeyCode::Char('3') => self.focus(Pane::Log),
            KeyCode::Char('4') => self.focus(Pane::Doors),
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1),
            KeyCode::PageDown => self.move_selection(PAGE as isize),
            KeyCode::PageUp => self.move_selection(-(PAGE as isize)),
            KeyCode::Home | KeyCode::Char('g') => self.selected[self.focus.index()] = 0,
            KeyCode::End | KeyCode::Char('G') => {
                let len = self.pane_len(self.focus);
                self.selected[self.focus.index()] = len.saturating_sub(1);
            }
            KeyCode::Char('r') => self.ask_revoke(),
            KeyCode::Char('R') if self.is_fleet() => {
                // Offer the selected row's host first.
                let cursor = self.selected_host().map_or(0, |h| h + 1);
                self.overlay = Some(Overlay::ChooseReload { cursor });
            }
            KeyCode::Char('R') => {
                self.set_notice("reloading the configuration...".into(), false, None);
                return Some(Command::Reload { host: None });
            }
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Esc => {
                self.filter.clear();
                self.selected = [0; 4];
            }
            KeyCode::Char('p') => {
                self.paused = !self.paused;
                if !self.paused {
                    self.release_held();
                }
            }
            KeyCode::Char('?') | KeyCode::F(1) => self.overlay = Some(Overlay::Help),
            _ => {}
        }
        None
    }

    fn on_overlay_key(&mut self, overlay: Overlay, key: KeyEvent) -> Option<Command> {
        match overlay {
            Overlay::ChooseReload { cursor } => self.on_choose_reload_key(cursor, key),
            Overlay::ConfirmRevoke { host, addr, door } => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => {
                    let on = self.host_prefix(host);
                    self.set_notice(format!("{on}revoking {addr} ({door})..."), false, None);
                    Some(Command::Revoke { host, addr, door })
                }
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => {
                    self.set_notice("revoke cancelled".into(), false, None);
                    None
                }
                _ => {
                    self.overlay = Some(Overlay::ConfirmRevoke { host, addr, door });
                    None
                }
            },
            other => match key.code {
                KeyCode::Esc
                | KeyCode::Enter
                | KeyCode::Char('q')
                | KeyCode::Char(' ')
                | KeyCode::Char('?') => None,
                _ => {
                    self.overlay = Some(other);
                    None
                }
            },
        }
    }

    /// The reload popup: j/k (or the arrows) choose every host or one, Enter reloads, `a`
    /// reloads every host, Esc cancels.
    fn on_choose_reload_key(&mut self, cursor: usize, key: KeyEvent) -> Option<Command> {
        let last = self.hosts.len();
        let chosen = match key.code {
            KeyCode::Down | KeyCode::Char('j') => {
                self.overlay = Some(Overlay::ChooseReload {
                    cursor: (cursor + 1).min(last),
                });
                return None;
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.overlay = Some(Overlay::ChooseReload {
                    cursor: cursor.saturating_sub(1),
                });
                return None;
            }
            KeyCode::Enter => cursor.min(last),
            KeyCode::Char('a') => 0,
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('n') => {
                self.set_notice("reload cancelled".into(), false, None);
                return None;
            }
            _ => {
                self.overlay = Some(Overlay::ChooseReload { cursor });
                return None;
            }
        };
        let host = chosen.checked_sub(1);
        let text = match host {
            None => format!("reloading the configuration on {} hosts...", last),
            Some(h) => format!("{}reloading the configuration...", self.host_prefix(h)),
        };
        self.set_notice(text, false, None);
        Some(Command::Reload { host })
    }

    /// The host of the selected row in the focused pane, if it has one.
    pub fn selected_host(&self) -> Option<usize> {
        let i = self.selection(self.focus)?;
        match self.focus {
            Pane::Attempts => self.visible_attempts().get(i).map(|a| a.host),
            Pane::Grants => self.visible_grants().get(i).map(|g| g.host),
            Pane::Log => self.visible_log().get(i).map(|e| e.host),
            Pane::Doors => self.visible_doors().get(i).map(|(h, _)| *h),
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent, ctrl: bool) {
        match key.code {
            KeyCode::Esc => {
                self.filter.clear();
                self.editing_filter = false;
            }
            KeyCode::Enter => self.editing_filter = false,
            KeyCode::Backspace => {
                self.filter.pop();
            }
            KeyCode::Char('u') if ctrl => self.filter.clear(),
            KeyCode::Char(c) if !ctrl && !c.is_control() => self.filter.push(c),
            _ => return,
        }
        self.selected = [0; 4];
    }

    fn focus(&mut self, pane: Pane) {
        self.focus = pane;
        if matches!(pane, Pane::Log | Pane::Doors) {
            self.bottom = pane;
        }
    }

    fn move_selection(&mut self, by: isize) {
        let len = self.pane_len(self.focus);
        let i = self.focus.index();
        let current = self.selected[i].min(len.saturating_sub(1));
        self.selected[i] = current.saturating_add_signed(by).min(len.saturating_sub(1));
    }

    fn ask_revoke(&mut self) {
        if self.focus == Pane::Attempts {
            self.ask_revoke_attempt();
            return;
        }
        if self.focus != Pane::Grants {
            self.set_notice(
                "select a grant first: Tab to the Grants pane, j/k, then r".into(),
                true,
                None,
            );
            return;
        }
        let Some(index) = self.selection(Pane::Grants) else {
            self.set_notice("no open grant to revoke".into(), true, None);
            return;
        };
        let target = self
            .visible_grants()
            .get(index)
            .map(|g| (g.host, g.info.addr, g.info.door.clone(), g.ended));
        match target {
            Some((host, addr, door, None)) => {
                self.overlay = Some(Overlay::ConfirmRevoke { host, addr, door })
            }
            Some((_, addr, door, Some(_))) => {
                self.set_notice(format!("{addr} ({door}) is already closed"), true, None)
            }
            None => self.set_notice("no open grant to revoke".into(), true, None),
        }
    }

    /// `r` on an attempt: an attempt that opened its door offers to revoke that grant.
    fn ask_revoke_attempt(&mut self) {
        let Some(index) = self.selection(Pane::Attempts) else {
            self.set_notice("no attempt selected".into(), true, None);
            return;
        };
        let Some((host, addr, door, opened)) = self.visible_attempts().get(index).map(|a| {
            (
                a.host,
                a.addr,
                a.door.clone(),
                matches!(a.ended, Some((AttemptEnd::Open, _))),
            )
        }) else {
            self.set_notice("no attempt selected".into(), true, None);
            return;
        };
        if !opened {
            self.set_notice(
                format!("{addr} ({door}) has not opened the door: nothing to revoke"),
                true,
                None,
            );
            return;
        }
        let open = self.grants.iter().any(|g| {
            g.host == host && g.info.addr == addr && g.info.door == door && g.ended.is_none()
        });
        if open {
            self.overlay = Some(Overlay::ConfirmRevoke { host, addr, door });
        } else {
            self.set_notice(
                format!("{addr} ({door}) opened, but holds no open grant (already closed)"),
                true,
                None,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::fixtures::*;
    use crossterm::event::KeyEventState;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ch(c: char) -> KeyEvent {
        key(KeyCode::Char(c))
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn press(s: &mut State, keys: &[KeyEvent]) -> Vec<Command> {
        keys.iter().filter_map(|k| s.on_key(*k)).collect()
    }

    #[test]
    fn q_and_ctrl_c_quit_even_from_popups_and_the_filter() {
        let mut s = busy();
        assert_eq!(s.on_key(ch('q')), Some(Command::Quit));
        s.overlay = Some(Overlay::Help);
        assert_eq!(s.on_key(ctrl('c')), Some(Command::Quit));
        s.overlay = None;
        s.editing_filter = true;
        assert_eq!(s.on_key(ch('q')), None, "q is text in the filter");
        assert_eq!(s.filter, "q");
        assert_eq!(s.on_key(ctrl('c')), Some(Command::Quit));
    }

    #[test]
    fn releases_are_ignored() {
        let mut s = busy();
        let mut release = ch('q');
        release.kind = KeyEventKind::Release;
        release.state = KeyEventState::NONE;
        assert_eq!(s.on_key(release), None);
    }

    #[test]
    fn tab_cycles_panes_and_the_bottom_follows() {
        let mut s = busy();
        assert_eq!(s.focus, Pane::Attempts);
        let order: Vec<Pane> = (0..4)
            .map(|_| {
                s.on_key(key(KeyCode::Tab));
                s.focus
            })
            .collect();
        assert_eq!(
            order,
            [Pane::Grants, Pane::Log, Pane::Doors, Pane::Attempts]
        );
        assert_eq!(s.bottom, Pane::Doors);
        s.on_key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT));
        assert_eq!(s.focus, Pane::Doors);
        s.on_key(ch('3'));
        assert_eq!((s.focus, s.bottom), (Pane::Log, Pane::Log));
    }

    #[test]
    fn selection_moves_and_clamps() {
        let mut s = busy();
        let n = s.pane_len(Pane::Attempts);
        assert!(n >= 3);
        press(&mut s, &[ch('j'), key(KeyCode::Down)]);
        assert_eq!(s.selection(Pane::Attempts), Some(2));
        press(&mut s, &[ch('k')]);
        assert_eq!(s.selection(Pane::Attempts), Some(1));
        press(&mut s, &[key(KeyCode::PageDown)]);
        assert_eq!(s.selection(Pane::Attempts), Some(n - 1));
        press(&mut s, &[key(KeyCode::Up); 20]);
        assert_eq!(s.selection(Pane::Attempts), Some(0));
        press(&mut s, &[ch('G')]);
        assert_eq!(s.selection(Pane::Attempts), Some(n - 1));
        press(&mut s, &[ch('g')]);
        assert_eq!(s.selection(Pane::Attempts), Some(0));
        assert_eq!(
            s.selection(Pane::Grants),
            Some(0),
            "other panes keep theirs"
        );
    }

    #[test]
    fn revoke_asks_first_then_sends_the_selected_grant() {
        let mut s = busy();
        press(&mut s, &[ch('2'), ch('j')]);
        let target = s.visible_grants()[1].info.clone();
        assert_eq!(s.on_key(ch('r')), None);
        assert_eq!(
            s.overlay,
            Some(Overlay::ConfirmRevoke {
                host: 0,
                addr: target.addr,
                door: target.door.clone()
            })
        );
        assert_eq!(s.on_key(ch('x')), None, "other keys wait for y/n");
        assert!(s.overlay.is_some());
        assert_eq!(
            s.on_key(ch('y')),
            Some(Command::Revoke {
                host: 0,
                addr: target.addr,
                door: target.door.clone()
            })
        );
        assert_eq!(s.overlay, None);
        assert_eq!(
            Command::Revoke {
                host: 0,
                addr: target.addr,
                door: target.door.clone()
            }
            .request(),
            Some(Request::Revoke {
                addr: target.addr,
                door: Some(target.door)
            })
        );
    }

    #[test]
    fn revoke_can_be_cancelled() {
        for cancel in [ch('n'), key(KeyCode::Esc)] {
            let mut s = busy();
            assert!(press(&mut s, &[ch('2'), ch('r'), cancel]).is_empty());
            assert_eq!(s.overlay, None);
            assert_eq!(
                s.notice.as_ref().map(|n| n.text.as_str()),
                Some("revoke cancelled")
            );
        }
    }

    #[test]
    fn revoke_from_an_attempt_that_opened_its_door() {
        let mut s = busy();
        let row = |s: &State, addr: &str| {
            s.visible_attempts()
                .iter()
                .position(|a| a.addr == ip(addr))
                .expect("attempt row")
        };
        // 10.0.0.99 just opened openSSH and holds a grant: r asks to revoke it.
        s.selected[Pane::Attempts.index()] = row(&s, "10.0.0.99");
        assert_eq!(s.on_key(ch('r')), None);
        assert_eq!(
            s.overlay,
            Some(Overlay::ConfirmRevoke {
                host: 0,
                addr: ip("10.0.0.99"),
                door: "openSSH".into()
            })
        );
        assert_eq!(
            s.on_key(ch('y')),
            Some(Command::Revoke {
                host: 0,
                addr: ip("10.0.0.99"),
                door: "openSSH".into()
            })
        );
        // An attempt still in progress has nothing to revoke.
        let mut s = busy();
        s.selected[Pane::Attempts.index()] = row(&s, "10.0.0.12");
        assert_eq!(s.on_key(ch('r')), None);
        assert_eq!(s.overlay, None);
        assert!(s
            .notice
            .as_ref()
            .is_some_and(|n| n.error && n.text.contains("has not opened")));
    }

    #[test]
    fn revoke_needs_a_grant_selected_in_the_grants_pane() {
        let mut s = busy();
        assert_eq!(s.on_key(ch('r')), None);
        assert_eq!(s.overlay, None);
        assert!(s.notice.as_ref().is_some_and(|n| n.error));
        let mut s = connected();
        press(&mut s, &[ch('2'), ch('r')]);
        assert_eq!(s.overlay, None);
        assert_eq!(
            s.notice.as_ref().map(|n| n.text.as_str()),
            Some("no open grant to revoke")
        );
    }

    #[test]
    fn reload_help_and_pause() {
        let mut s = busy();
        assert_eq!(s.on_key(ch('R')), Some(Command::Reload { host: None }));
        assert_eq!(
            Command::Reload { host: None }.request(),
            Some(Request::Reload)
        );
        assert_eq!(Command::Quit.request(), None);
        s.on_key(ch('?'));
        assert_eq!(s.overlay, Some(Overlay::Help));
        s.on_key(ch('j'));
        assert_eq!(s.overlay, Some(Overlay::Help), "help stays until closed");
        s.on_key(key(KeyCode::Esc));
        assert_eq!(s.overlay, None);
        s.on_key(ch('p'));
        assert!(s.paused);
        s.held.push_front(s.log[0].clone());
        s.on_key(ch('p'));
        assert!(!s.paused && s.held.is_empty());
    }

    #[test]
    fn slash_edits_the_filter_enter_keeps_esc_clears() {
        let mut s = busy();
        press(&mut s, &[ch('j'), ch('/'), ch('v'), ch('a'), ch('x')]);
        assert!(s.editing_filter);
        assert_eq!(s.filter, "vax");
        press(
            &mut s,
            &[key(KeyCode::Backspace), ch('u'), key(KeyCode::Enter)],
        );
        assert!(!s.editing_filter);
        assert_eq!(s.filter, "vau");
        assert_eq!(s.selected, [0; 4], "selection restarts with the filter");
        assert!(s.visible_attempts().iter().all(|a| a.door == "vault"));
        press(&mut s, &[key(KeyCode::Esc)]);
        assert_eq!(s.filter, "");
        press(&mut s, &[ch('/'), ch('1'), key(KeyCode::Esc)]);
        assert!(!s.editing_filter);
        assert_eq!(s.filter, "");
    }

    #[test]
    fn alt_char_is_esc_then_the_char() {
        let mut s = busy();
        press(&mut s, &[ch('/'), ch('x')]);
        let alt_q = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::ALT);
        assert_eq!(s.on_key(alt_q), Some(Command::Quit));
        assert!(!s.editing_filter);
        assert_eq!(s.filter, "");
    }

    #[test]
    fn reload_errors_close_with_esc() {
        let mut s = busy();
        s.overlay = Some(Overlay::ReloadFailed {
            errors: vec!["x:1: bad".into()],
        });
        assert_eq!(s.on_key(ch('R')), None, "keys do not leak through popups");
        assert!(s.overlay.is_some());
        s.on_key(key(KeyCode::Esc));
        assert_eq!(s.overlay, None);
    }
}
