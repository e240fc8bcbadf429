//! One room's members, indexed by user and by role, so that fan-out visits only the
//! sessions an event's audience may admit: 10,000 customers in `tickets` are not each
//! looked at for a ticket only its requester and the agents may see.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::SessionId;
use crate::event::{Event, Reach, User};

#[derive(Debug, Default)]
pub(super) struct Members {
    all: HashSet<SessionId>,
    by_user: HashMap<Arc<str>, Vec<SessionId>>,
    by_role: HashMap<Arc<str>, HashSet<SessionId>>,
}

impl Members {
    pub(super) fn insert(&mut self, id: SessionId, user: &User) {
        if !self.all.insert(id) {
            return;
        }
        self.by_user
            .entry(Arc::from(user.sub.as_str()))
            .or_default()
            .push(id);
        for role in &user.roles {
            self.by_role
                .entry(Arc::from(role.as_str()))
                .or_default()
                .insert(id);
        }
    }

    pub(super) fn remove(&mut self, id: SessionId, user: &User) {
        if !self.all.remove(&id) {
            return;
        }
        if let Some(ids) = self.by_user.get_mut(user.sub.as_str()) {
            ids.retain(|s| *s != id);
            if ids.is_empty() {
                self.by_user.remove(user.sub.as_str());
            }
        }
        for role in &user.roles {
            if let Some(ids) = self.by_role.get_mut(role.as_str()) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_role.remove(role.as_str());
                }
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Calls `visit` for every member `ev` may reach (a superset of those it admits:
    /// `Event::view` decides), at a cost proportional to that number.
    pub(super) fn candidates(&self, ev: &Event, mut visit: impl FnMut(SessionId)) {
        let everyone =
            ev.audience.reach == Reach::Everyone || ev.before.as_ref() == Some(&Reach::Everyone);
        if everyone {
            self.all.iter().copied().for_each(visit);
            return;
        }
        for role in ev.audience.roles.iter() {
            if let Some(ids) = self.by_role.get(role.as_str()) {
                ids.iter().copied().for_each(&mut visit);
            }
        }
        for reach in std::iter::once(&ev.audience.reach).chain(&ev.before) {
            if let Reach::Users(users) = reach {
                for u in users {
                    if let Some(ids) = self.by_user.get(u.as_str()) {
                        ids.iter().copied().for_each(&mut visit);
                    }
                }
            }
        }
    }
}
