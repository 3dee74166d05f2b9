//! [`Policy`]: who may do what in a room, modelled on PrivMX's ContainerPolicy.
use serde::{Deserialize, Serialize};

/// Who an access level admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Nobody.
    None,
    /// The room's users and managers.
    User,
    /// The room's managers only.
    Manager,
    /// Every registered user of the room's context.
    All,
}

impl Access {
    /// The level's name as used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::User => "user",
            Access::Manager => "manager",
            Access::All => "all",
        }
    }

    /// Parses a level name.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "none" => Access::None,
            "user" => Access::User,
            "manager" => Access::Manager,
            "all" => Access::All,
            _ => return None,
        })
    }

    /// Whether someone with `role` is admitted.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Access::None => false,
            Access::All => true,
            Access::User => matches!(role, Role::User | Role::Manager),
            Access::Manager => role == Role::Manager,
        }
    }
}

/// A requester's relation to a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not in the room's users or managers.
    Outsider,
    /// In the room's users.
    User,
    /// In the room's managers.
    Manager,
}

/// An action a policy governs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// See the room (get, list, events).
    Get,
    /// Change its metadata.
    Update,
    /// Delete it.
    Delete,
    /// Publish media.
    Publish,
    /// Subscribe to media.
    Subscribe,
    /// Record it.
    Record,
    /// Change this policy (membership changes always need a manager, whose signature every client checks).
    UpdatePolicy,
}

/// Who may get, update, delete, publish, subscribe, record and change the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Who may see the room.
    pub get: Access,
    /// Who may change its metadata.
    pub update: Access,
    /// Who may delete it.
    pub delete: Access,
    /// Who may publish streams.
    pub publish: Access,
    /// Who may subscribe to streams.
    pub subscribe: Access,
    /// Who may record.
    pub record: Access,
    /// Who may change this policy.
    pub update_policy: Access,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            get: Access::User,
            update: Access::Manager,
            delete: Access::Manager,
            publish: Access::User,
            subscribe: Access::User,
            record: Access::Manager,
            update_policy: Access::Manager,
        }
    }
}

impl Policy {
    /// The access level for one right.
    pub fn access(&self, right: Right) -> Access {
        match right {
            Right::Get => self.get,
            Right::Update => self.update,
            Right::Delete => self.delete,
            Right::Publish => self.publish,
            Right::Subscribe => self.subscribe,
            Right::Record => self.record,
            Right::UpdatePolicy => self.update_policy,
        }
    }

    /// Whether `role` holds `right`.
    pub fn allows(&self, right: Right, role: Role) -> bool {
        self.access(right).admits(role)
    }

    /// The levels in a fixed order, for signing.
    pub fn levels(&self) -> [Access; 7] {
        [
            self.get,
            self.update,
            self.delete,
            self.publish,
            self.subscribe,
            self.record,
            self.update_policy,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_admit_the_right_roles() {
        assert!(Access::User.admits(Role::Manager));
        assert!(Access::User.admits(Role::User));
        assert!(!Access::User.admits(Role::Outsider));
        assert!(!Access::Manager.admits(Role::User));
        assert!(Access::All.admits(Role::Outsider));
        assert!(!Access::None.admits(Role::Manager));
        let p = Policy::default();
        assert!(p.allows(Right::Get, Role::User));
        assert!(!p.allows(Right::Delete, Role::User));
    }
}
