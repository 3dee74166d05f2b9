//! `streams room …`: create, list, show, update and delete rooms, and how a room is printed.

use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use streams_client::{NewRoom, Room, RoomUpdate};
use streams_proto::UserId;
use streams_proto::policy::{Access, Policy};
use streams_proto::wire::{Paging, SortOrder};

use crate::common::{Globals, connect, identity, room_id};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Order {
    Asc,
    Desc,
}

#[derive(Subcommand)]
pub(crate) enum RoomAction {
    /// Create a room; prints its id.
    Create {
        /// Display name (private: stored encrypted).
        #[arg(long)]
        name: String,
        /// A user of the room (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// A manager of the room besides you (repeatable).
        #[arg(long = "manager")]
        managers: Vec<String>,
        /// Public metadata (the bridge can read it).
        #[arg(long, default_value = "")]
        public_meta: String,
        /// Private metadata (members only).
        #[arg(long, default_value = "")]
        private_meta: String,
        /// Policy entries RIGHT=LEVEL, rights get|update|delete|publish|subscribe|record|update_policy,
        /// levels none|user|manager|all (repeatable).
        #[arg(long = "policy")]
        policy: Vec<String>,
    },
    /// List the rooms you can see.
    List {
        /// How many to skip.
        #[arg(long, default_value_t = 0)]
        skip: u32,
        /// How many to show (1–100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Order by creation time.
        #[arg(long, value_enum, default_value_t = Order::Desc)]
        order: Order,
    },
    /// Show one room (private metadata decrypted for members).
    Get {
        /// The room id.
        id: String,
    },
    /// Change a room.
    Update {
        /// The room id.
        id: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// Add a user (repeatable).
        #[arg(long = "add-user")]
        add_users: Vec<String>,
        /// Remove a user (repeatable); starts a new key epoch.
        #[arg(long = "remove-user")]
        remove_users: Vec<String>,
        /// Add a manager (repeatable).
        #[arg(long = "add-manager")]
        add_managers: Vec<String>,
        /// Remove a manager (repeatable).
        #[arg(long = "remove-manager")]
        remove_managers: Vec<String>,
        /// New public metadata.
        #[arg(long)]
        public_meta: Option<String>,
        /// New private metadata.
        #[arg(long)]
        private_meta: Option<String>,
        /// Policy entries RIGHT=LEVEL (repeatable).
        #[arg(long = "policy")]
        policy: Vec<String>,
        /// Start a new key epoch even if nothing else changes.
        #[arg(long)]
        rotate_key: bool,
        /// The version you are updating (default: the current one).
        #[arg(long)]
        version: Option<u64>,
        /// Apply even if the version is stale.
        #[arg(long)]
        force: bool,
    },
    /// Delete a room.
    Delete {
        /// The room id.
        id: String,
    },
}

fn user_ids(list: &[String]) -> Result<Vec<UserId>, String> {
    list.iter()
        .map(|s| UserId::parse(s).map_err(|e| e.to_string()))
        .collect()
}

fn apply_policy(mut policy: Policy, entries: &[String]) -> Result<Policy, String> {
    for entry in entries {
        let (right, level) = entry
            .split_once('=')
            .ok_or_else(|| format!("policy entry {entry:?} is not RIGHT=LEVEL"))?;
        let level = Access::parse(level)
            .ok_or_else(|| format!("unknown level {level:?} (none|user|manager|all)"))?;
        let slot = match right {
            "get" => &mut policy.get,
            "update" => &mut policy.update,
            "delete" => &mut policy.delete,
            "publish" => &mut policy.publish,
            "subscribe" => &mut policy.subscribe,
            "record" => &mut policy.record,
            "update_policy" => &mut policy.update_policy,
            other => return Err(format!("unknown right {other:?}")),
        };
        *slot = level;
    }
    Ok(policy)
}

/// A room as printed.
#[derive(Serialize)]
pub(crate) struct RoomView {
    id: String,
    context_id: String,
    name: Option<String>,
    created_at: i64,
    created_by: String,
    modified_at: i64,
    modified_by: String,
    version: u64,
    key_epoch: u64,
    users: Vec<String>,
    managers: Vec<String>,
    policy: Policy,
    public_meta: String,
    private_meta: Option<String>,
    readable: bool,
}

impl From<&Room> for RoomView {
    fn from(room: &Room) -> Self {
        let ids = |v: &[UserId]| v.iter().map(ToString::to_string).collect();
        RoomView {
            id: room.id.to_string(),
            context_id: room.context_id.to_string(),
            name: room.name().map(str::to_string),
            created_at: room.created_at,
            created_by: room.created_by.to_string(),
            modified_at: room.modified_at,
            modified_by: room.modified_by.to_string(),
            version: room.version,
            key_epoch: room.key_epoch,
            users: ids(&room.users),
            managers: ids(&room.managers),
            policy: room.policy,
            public_meta: String::from_utf8_lossy(&room.public_meta).into_owned(),
            private_meta: room
                .private_meta()
                .map(|m| String::from_utf8_lossy(m).into_owned()),
            readable: room.private.is_some(),
        }
    }
}

fn print_room(room: &Room, json: bool) {
    let view = RoomView::from(room);
    if json {
        println!("{}", serde_json::to_string(&view).unwrap_or_default());
        return;
    }
    println!("room {}", view.id);
    println!(
        "  name:         {}",
        view.name.as_deref().unwrap_or("(encrypted)")
    );
    println!(
        "  version:      {}   key epoch: {}",
        view.version, view.key_epoch
    );
    println!("  users:        {}", view.users.join(", "));
    println!("  managers:     {}", view.managers.join(", "));
    println!("  public meta:  {}", view.public_meta);
    println!(
        "  private meta: {}",
        view.private_meta.as_deref().unwrap_or("(encrypted)")
    );
}

pub(crate) fn room_command(cli: &Globals, action: &RoomAction) -> Result<(), String> {
    let client = connect(cli, &identity(cli)?)?;
    let err = |e: streams_client::ClientError| e.to_string();
    match action {
        RoomAction::Create {
            name,
            users,
            managers,
            public_meta,
            private_meta,
            policy,
        } => {
            let room = client
                .create_room(NewRoom {
                    context_id: None,
                    name: name.clone(),
                    users: user_ids(users)?,
                    managers: user_ids(managers)?,
                    public_meta: public_meta.as_bytes().to_vec(),
                    private_meta: private_meta.as_bytes().to_vec(),
                    policy: Some(apply_policy(Policy::default(), policy)?),
                })
                .map_err(err)?;
            if cli.json {
                print_room(&room, true);
            } else {
                println!("{}", room.id);
            }
        }
        RoomAction::List { skip, limit, order } => {
            let paging = Paging {
                skip: *skip,
                limit: *limit,
                order: match order {
                    Order::Asc => SortOrder::Asc,
                    Order::Desc => SortOrder::Desc,
                },
            };
            let page = client.list_rooms(None, paging).map_err(err)?;
            for (id, e) in &page.rejected {
                eprintln!("warning: room {id} failed verification and is not shown: {e}");
            }
            if cli.json {
                let rooms: Vec<RoomView> = page.rooms.iter().map(RoomView::from).collect();
                let out = serde_json::json!({ "total": page.total, "rooms": rooms });
                println!("{out}");
            } else {
                println!("{} room(s)", page.total);
                for room in &page.rooms {
                    println!(
                        "{}  {}  v{}  {} user(s)",
                        room.id,
                        room.name().unwrap_or("(encrypted)"),
                        room.version,
                        room.users.len()
                    );
                }
            }
        }
        RoomAction::Get { id } => {
            let room = client.get_room(&room_id(id)?).map_err(err)?;
            print_room(&room, cli.json);
        }
        RoomAction::Update {
            id,
            name,
            add_users,
            remove_users,
            add_managers,
            remove_managers,
            public_meta,
            private_meta,
            policy,
            rotate_key,
            version,
            force,
        } => {
            let room_id = room_id(id)?;
            let policy = if policy.is_empty() {
                None
            } else {
                let current = client.get_room(&room_id).map_err(err)?;
                Some(apply_policy(current.policy, policy)?)
            };
            let mut update = RoomUpdate::new(room_id);
            update.name = name.clone();
            update.add_users = user_ids(add_users)?;
            update.remove_users = user_ids(remove_users)?;
            update.add_managers = user_ids(add_managers)?;
            update.remove_managers = user_ids(remove_managers)?;
            update.public_meta = public_meta.as_ref().map(|m| m.as_bytes().to_vec());
            update.private_meta = private_meta.as_ref().map(|m| m.as_bytes().to_vec());
            update.policy = policy;
            update.rotate_key = *rotate_key;
            update.version = *version;
            update.force = *force;
            let room = client.update_room(update).map_err(err)?;
            print_room(&room, cli.json);
        }
        RoomAction::Delete { id } => {
            client.delete_room(&room_id(id)?).map_err(err)?;
            if !cli.json {
                println!("deleted");
            }
        }
    }
    Ok(())
}
