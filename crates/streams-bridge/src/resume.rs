//! [`Resumption`]: connections kept through a drop. Every authenticated connection is given a
//! ticket (a random token). When it ends without its client closing it (a reset, a dead network),
//! it is *parked* for [`RESUME_GRACE`]: its media sessions, room presence and event subscriptions
//! stay, so media that never stopped keeps flowing and nobody sees the member leave. A new
//! connection of the same user presenting the token within the grace takes it over (the same
//! connection id, so the SFU and the hub change nothing); otherwise the grace ends it as any
//! disconnect. A token is good once. A connection whose client noticed the drop before the bridge
//! did is still live here: the resume kicks it and takes it over as soon as it parks.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use streams_proto::UserId;
use tokio::sync::{Notify, oneshot};

use crate::hub::ConnId;

/// How long a dropped connection is kept for its client to resume it.
pub const RESUME_GRACE: Duration = Duration::from_secs(20);

/// How long a resume waits for a still-live connection it kicked to park: well within the
/// client's 5 s for connecting and logging in, so the new token reaches it.
const TAKEOVER_WAIT: Duration = Duration::from_millis(1500);

/// A resume token.
pub type Token = [u8; 32];

struct Ticket {
    conn: ConnId,
    user: UserId,
    state: TicketState,
}

enum TicketState {
    /// The connection is up; kicking it ends it.
    Live(Arc<Notify>),
    /// Dropped; firing this tells the grace timer it was taken over.
    Parked(oneshot::Sender<()>),
}

/// The tickets of a bridge's connections.
#[derive(Default)]
pub struct Resumption {
    tickets: Mutex<HashMap<Token, Ticket>>,
    /// Signalled whenever a connection parks.
    parked: Notify,
}

impl Resumption {
    fn tickets(&self) -> std::sync::MutexGuard<'_, HashMap<Token, Ticket>> {
        self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for the live connection `conn` of `user`, which `kick` ends.
    pub fn issue(&self, conn: ConnId, user: UserId, kick: Arc<Notify>) -> Token {
        let token: Token = rand::random();
        let ticket = Ticket {
            conn,
            user,
            state: TicketState::Live(kick),
        };
        self.tickets().insert(token, ticket);
        token
    }

    /// The connection of `token` dropped: it is kept. The receiver fires if it is taken over;
    /// `None`: there is no such ticket.
    pub fn park(&self, token: &Token) -> Option<oneshot::Receiver<()>> {
        let (taken, taken_rx) = oneshot::channel();
        let parked = match self.tickets().get_mut(token) {
            Some(ticket) => {
                ticket.state = TicketState::Parked(taken);
                true
            }
            None => false,
        };
        self.parked.notify_waiters();
        parked.then_some(taken_rx)
    }

    /// Ends a parked ticket whose grace passed; `true` if it was still parked (nobody took it
    /// over, so the connection is to be ended now).
    pub fn expire(&self, token: &Token) -> bool {
        let mut tickets = self.tickets();
        if matches!(
            tickets.get(token),
            Some(Ticket {
                state: TicketState::Parked(_),
                ..
            })
        ) {
            tickets.remove(token);
            return true;
        }
        false
    }

    /// Forgets a ticket (its connection ended for good).
    pub fn forget(&self, token: &Token) {
        self.tickets().remove(token);
    }

    /// Takes over the connection of `token` for `user`: a parked one at once, a live one once it
    /// has been kicked and parked (within 1.5 s). `None`: no such ticket, another
    /// user's, or already taken.
    pub async fn take(&self, token: &Token, user: &UserId) -> Option<ConnId> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let parked = self.parked.notified();
            tokio::pin!(parked);
            parked.as_mut().enable();
            {
                let mut tickets = self.tickets();
                let ticket = tickets.get(token).filter(|t| t.user == *user)?;
                match &ticket.state {
                    TicketState::Live(kick) => kick.notify_one(),
                    TicketState::Parked(_) => {
                        let ticket = tickets.remove(token)?;
                        if let TicketState::Parked(taken) = ticket.state {
                            let _ = taken.send(());
                        }
                        return Some(ticket.conn);
                    }
                }
            }
            if tokio::time::timeout_at(deadline, parked).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use streams_proto::Identity;

    use super::*;

    #[tokio::test]
    async fn a_parked_connection_is_taken_over_once_by_its_own_user() {
        let resumption = Resumption::default();
        let (alice, mallory) = (
            Identity::generate().user_id().clone(),
            Identity::generate().user_id().clone(),
        );
        let token = resumption.issue(7, alice.clone(), Arc::new(Notify::new()));
        let taken = resumption.park(&token).unwrap();
        assert_eq!(resumption.take(&token, &mallory).await, None);
        assert_eq!(resumption.take(&rand::random(), &alice).await, None);
        assert_eq!(resumption.take(&token, &alice).await, Some(7));
        taken.await.expect("the grace timer hears of the takeover");
        assert_eq!(resumption.take(&token, &alice).await, None, "good once");
        assert!(!resumption.expire(&token));
    }

    #[tokio::test]
    async fn a_live_connection_is_kicked_and_taken_once_it_parks() {
        let resumption = Arc::new(Resumption::default());
        let alice = Identity::generate().user_id().clone();
        let kick = Arc::new(Notify::new());
        let token = resumption.issue(3, alice.clone(), Arc::clone(&kick));
        let parks = {
            let resumption = Arc::clone(&resumption);
            tokio::spawn(async move {
                kick.notified().await;
                let taken = resumption.park(&token).unwrap();
                taken.await.is_ok()
            })
        };
        assert_eq!(resumption.take(&token, &alice).await, Some(3));
        assert!(
            parks.await.unwrap(),
            "the takeover is told to the parked side"
        );
    }

    #[tokio::test]
    async fn an_expired_ticket_cannot_be_taken() {
        let resumption = Resumption::default();
        let alice = Identity::generate().user_id().clone();
        let token = resumption.issue(1, alice.clone(), Arc::new(Notify::new()));
        assert!(!resumption.expire(&token), "a live ticket does not expire");
        let _taken = resumption.park(&token).unwrap();
        assert!(resumption.expire(&token));
        assert_eq!(resumption.take(&token, &alice).await, None);
    }
}
