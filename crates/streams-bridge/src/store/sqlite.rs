//! [`SqliteStore`]: the embedded store. WAL journal, `synchronous=FULL`, a versioned schema with
//! migrations (`PRAGMA user_version`), one transaction per write. It holds only what the bridge may see:
//! private metadata is stored as ciphertext.
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use streams_proto::policy::Role;
use streams_proto::wire::{Paging, SortOrder};
use streams_proto::{ContextId, EpochRecord, RoomId, RoomRecord, SignedMeta, UserId};

use super::{Store, StoreError};

/// Schema migrations, applied in order; `user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: users, rooms, epochs, members.
    "CREATE TABLE users (
         user_id    TEXT PRIMARY KEY,
         context_id TEXT NOT NULL,
         added_at   INTEGER NOT NULL
     );
     CREATE TABLE rooms (
         id          TEXT PRIMARY KEY,
         context_id  TEXT NOT NULL,
         created_at  INTEGER NOT NULL,
         created_by  TEXT NOT NULL,
         modified_at INTEGER NOT NULL,
         modified_by TEXT NOT NULL,
         version     INTEGER NOT NULL,
         get_access  TEXT NOT NULL,
         meta_json   TEXT NOT NULL
     );
     CREATE INDEX rooms_by_context ON rooms (context_id, created_at);
     CREATE TABLE room_epochs (
         room_id     TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
         epoch       INTEGER NOT NULL,
         record_json TEXT NOT NULL,
         PRIMARY KEY (room_id, epoch)
     );
     CREATE TABLE room_members (
         room_id TEXT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
         user_id TEXT NOT NULL,
         role    TEXT NOT NULL,
         PRIMARY KEY (room_id, user_id)
     );
     CREATE INDEX members_by_user ON room_members (user_id);",
];

/// The embedded SQLite store.
pub struct SqliteStore {
    conn: Connection,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`; `:memory:` gives a private in-memory one.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = if path.as_os_str() == ":memory:" {
            Connection::open_in_memory().map_err(db)?
        } else {
            let conn = Connection::open(path).map_err(db)?;
            restrict_to_owner(path)?;
            conn
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        let mut store = SqliteStore { conn };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let current = self.schema_version()? as usize;
        if current > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "schema version {current} is newer than this bridge knows ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let tx = self.conn.transaction().map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)
                .map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(())
    }

    fn epochs(conn: &Connection, id: &str) -> Result<Vec<EpochRecord>, StoreError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT record_json FROM room_epochs WHERE room_id = ?1 ORDER BY epoch ASC",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([id], |r| r.get::<_, String>(0))
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row.map_err(db)?).map_err(corrupt)?);
        }
        Ok(out)
    }

    fn load(conn: &Connection, row: RoomRow) -> Result<RoomRecord, StoreError> {
        let epochs = Self::epochs(conn, &row.id)?;
        let parse_user = |s: &str| {
            UserId::parse(s).map_err(|e| StoreError::Corrupt(format!("user id in room row: {e}")))
        };
        Ok(RoomRecord {
            id: RoomId::parse(&row.id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            context_id: ContextId::parse(&row.context_id)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at: row.created_at,
            created_by: parse_user(&row.created_by)?,
            modified_at: row.modified_at,
            modified_by: parse_user(&row.modified_by)?,
            version: row.version as u64,
            meta: serde_json::from_str::<SignedMeta>(&row.meta_json).map_err(corrupt)?,
            epochs,
        })
    }

    fn write_members(tx: &rusqlite::Transaction<'_>, room: &RoomRecord) -> Result<(), StoreError> {
        tx.execute(
            "DELETE FROM room_members WHERE room_id = ?1",
            [room.id.as_str()],
        )
        .map_err(db)?;
        if let Some(latest) = room.latest() {
            for member in latest.members() {
                let role = match latest.role_of(&member) {
                    Role::Manager => "manager",
                    _ => "user",
                };
                tx.execute(
                    "INSERT INTO room_members (room_id, user_id, role) VALUES (?1, ?2, ?3)",
                    params![room.id.as_str(), member.as_str(), role],
                )
                .map_err(db)?;
            }
        }
        Ok(())
    }

    fn write_epochs(
        tx: &rusqlite::Transaction<'_>,
        room: &RoomRecord,
        from_epoch: u64,
    ) -> Result<(), StoreError> {
        for record in room.epochs.iter().filter(|r| r.epoch >= from_epoch) {
            tx.execute(
                "INSERT INTO room_epochs (room_id, epoch, record_json) VALUES (?1, ?2, ?3)",
                params![
                    room.id.as_str(),
                    record.epoch as i64,
                    serde_json::to_string(record).map_err(corrupt)?
                ],
            )
            .map_err(db)?;
        }
        Ok(())
    }
}

/// Makes the database file owner-only; SQLite gives its -wal and -shm files the same mode.
#[cfg(unix)]
fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::Database(format!("cannot restrict {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) -> Result<(), StoreError> {
    Ok(())
}

struct RoomRow {
    id: String,
    context_id: String,
    created_at: i64,
    created_by: String,
    modified_at: i64,
    modified_by: String,
    version: i64,
    meta_json: String,
}

const ROOM_COLUMNS: &str = "r.id, r.context_id, r.created_at, r.created_by, r.modified_at, r.modified_by, r.version, r.meta_json";

fn room_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RoomRow> {
    Ok(RoomRow {
        id: r.get(0)?,
        context_id: r.get(1)?,
        created_at: r.get(2)?,
        created_by: r.get(3)?,
        modified_at: r.get(4)?,
        modified_by: r.get(5)?,
        version: r.get(6)?,
        meta_json: r.get(7)?,
    })
}

impl Store for SqliteStore {
    fn add_user(
        &mut self,
        user: &UserId,
        context: &ContextId,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO users (user_id, context_id, added_at) VALUES (?1, ?2, ?3)",
                params![user.as_str(), context.as_str(), now_ms],
            )
            .map_err(db)?;
        Ok(n == 1)
    }

    fn remove_user(&mut self, user: &UserId) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM users WHERE user_id = ?1", [user.as_str()])
            .map_err(db)?;
        Ok(n == 1)
    }

    fn users(&self) -> Result<Vec<UserId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT user_id FROM users ORDER BY added_at, user_id")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let text = row.map_err(db)?;
            out.push(UserId::parse(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    fn is_registered(&self, user: &UserId) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM users WHERE user_id = ?1",
                [user.as_str()],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(db)
    }

    fn create_room(&mut self, room: &RoomRecord) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db)?;
        let inserted = tx
            .execute(
                "INSERT OR IGNORE INTO rooms (id, context_id, created_at, created_by, modified_at,
                     modified_by, version, get_access, meta_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    room.id.as_str(),
                    room.context_id.as_str(),
                    room.created_at,
                    room.created_by.as_str(),
                    room.modified_at,
                    room.modified_by.as_str(),
                    room.version as i64,
                    room.policy().get.as_str(),
                    serde_json::to_string(&room.meta).map_err(corrupt)?
                ],
            )
            .map_err(db)?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(room.id.clone()));
        }
        Self::write_epochs(&tx, room, 0)?;
        Self::write_members(&tx, room)?;
        tx.commit().map_err(db)
    }

    fn room(&self, id: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {ROOM_COLUMNS} FROM rooms r WHERE r.id = ?1"),
                [id.as_str()],
                room_row,
            )
            .optional()
            .map_err(db)?;
        row.map(|row| Self::load(&self.conn, row)).transpose()
    }

    fn replace_room(&mut self, room: &RoomRecord, read_version: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db)?;
        let stored_epoch: Option<i64> = tx
            .query_row(
                "SELECT MAX(epoch) FROM room_epochs WHERE room_id = ?1",
                [room.id.as_str()],
                |r| r.get(0),
            )
            .map_err(db)?;
        let updated = tx
            .execute(
                "UPDATE rooms SET modified_at = ?2, modified_by = ?3, version = ?4, get_access = ?5,
                     meta_json = ?6
                 WHERE id = ?1 AND version = ?7",
                params![
                    room.id.as_str(),
                    room.modified_at,
                    room.modified_by.as_str(),
                    room.version as i64,
                    room.policy().get.as_str(),
                    serde_json::to_string(&room.meta).map_err(corrupt)?,
                    read_version as i64
                ],
            )
            .map_err(db)?;
        if updated == 0 {
            let exists = tx
                .query_row(
                    "SELECT 1 FROM rooms WHERE id = ?1",
                    [room.id.as_str()],
                    |_| Ok(()),
                )
                .optional()
                .map_err(db)?
                .is_some();
            return Err(if exists {
                StoreError::Conflict(room.id.clone())
            } else {
                StoreError::NotFound(room.id.clone())
            });
        }
        let from = stored_epoch.map_or(0, |e| e as u64 + 1);
        Self::write_epochs(&tx, room, from)?;
        Self::write_members(&tx, room)?;
        tx.commit().map_err(db)
    }

    fn delete_room(&mut self, id: &RoomId) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM rooms WHERE id = ?1", [id.as_str()])
            .map_err(db)?;
        Ok(n == 1)
    }

    fn list_rooms(
        &self,
        context: &ContextId,
        viewer: &UserId,
        paging: Paging,
    ) -> Result<(Vec<RoomRecord>, u64), StoreError> {
        let visible = "FROM rooms r LEFT JOIN room_members m ON m.room_id = r.id AND m.user_id = ?2
             WHERE r.context_id = ?1 AND (r.get_access = 'all'
                 OR (r.get_access = 'user' AND m.role IS NOT NULL)
                 OR (r.get_access = 'manager' AND m.role = 'manager'))";
        let total: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) {visible}"),
                params![context.as_str(), viewer.as_str()],
                |r| r.get(0),
            )
            .map_err(db)?;
        let order = match paging.order {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {ROOM_COLUMNS} {visible} ORDER BY r.created_at {order}, r.id {order}
                 LIMIT ?3 OFFSET ?4"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    context.as_str(),
                    viewer.as_str(),
                    i64::from(paging.limit),
                    i64::from(paging.skip)
                ],
                room_row,
            )
            .map_err(db)?;
        let mut rooms = Vec::new();
        for row in rows {
            rooms.push(Self::load(&self.conn, row.map_err(db)?)?);
        }
        Ok((rooms, total as u64))
    }
}
