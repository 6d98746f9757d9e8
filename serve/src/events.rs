//! Live events: every event is written to the store's log under a new sequence number, then
//! handed to the WebSocket clients watching. A client that connects with `?after=SEQ` first gets
//! what the log still holds after SEQ (the last [`crate::store::EVENTS_KEPT`] events), then the
//! live ones, with nothing missed or repeated in between.

use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::model::EventView;
use crate::store::Store;

/// Live events a slow WebSocket client may fall behind by before it is served from the log.
const LIVE_BUFFER: usize = 1_024;
/// Events read from the log at a time.
const PAGE: usize = 500;

/// The event log and its live listeners.
pub struct Bus {
    store: Arc<Store>,
    live: broadcast::Sender<Arc<EventView>>,
    /// Serialises appends, so that live listeners see events in sequence order.
    order: Mutex<()>,
}

impl Bus {
    /// A bus logging to `store`.
    pub fn new(store: Arc<Store>) -> Bus {
        Bus { store, live: broadcast::channel(LIVE_BUFFER).0, order: Mutex::new(()) }
    }

    /// Logs an event and hands it to the listeners. An event the store cannot take is said on
    /// stderr and still handed to live listeners (with sequence number 0: it cannot be resumed).
    pub fn publish(&self, kind: &str, execution: Option<&str>, data: Value) {
        let time = crate::unix_ms();
        let _order = self.store.lock_beside(&self.order);
        let seq = match self.store.append_event(time, kind, execution, &data.to_string()) {
            Ok(seq) => seq,
            Err(e) => {
                tracing::error!(kind, execution, "event not stored: {e}");
                0
            }
        };
        let event = EventView { seq, time, kind: kind.to_owned(), execution: execution.map(str::to_owned), data };
        let _ = self.live.send(Arc::new(event));
    }

    /// The newest sequence number logged.
    pub fn last_seq(&self) -> u64 {
        self.store.last_event_seq().ok().flatten().unwrap_or(0)
    }

    /// Streams events after `after` to `socket` until the client leaves.
    pub async fn stream(self: Arc<Self>, mut socket: WebSocket, after: u64) {
        // Listen first, then read the log: an event published in between is in one or the other.
        let mut live = self.live.subscribe();
        let mut last = after;
        if self.replay(&mut socket, &mut last).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                event = live.recv() => match event {
                    Ok(event) if event.seq > last || event.seq == 0 => {
                        last = last.max(event.seq);
                        if send(&mut socket, &event).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // Fell behind the live buffer: the log has what was missed.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if self.replay(&mut socket, &mut last).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Sends what the log holds after `last`, moving `last` on; first a `backlog_truncated` event
    /// when the log no longer holds all of it.
    async fn replay(&self, socket: &mut WebSocket, last: &mut u64) -> Result<(), ()> {
        if let Ok(Some(first)) = self.store.first_event_seq()
            && last.saturating_add(1) < first
        {
            let gap = serde_json::json!({ "after": *last, "first_kept": first });
            let note = EventView {
                seq: 0,
                time: crate::unix_ms(),
                kind: "backlog_truncated".to_owned(),
                execution: None,
                data: gap,
            };
            send(socket, &note).await?;
        }
        loop {
            let page = self.store.events_after(*last, PAGE).map_err(|_| ())?;
            if page.is_empty() {
                return Ok(());
            }
            for stored in page {
                let data = serde_json::from_str(&stored.body).unwrap_or(Value::Null);
                let event = EventView {
                    seq: stored.seq,
                    time: stored.time_ms,
                    kind: stored.kind,
                    execution: stored.execution,
                    data,
                };
                *last = stored.seq;
                send(socket, &event).await?;
            }
        }
    }
}

async fn send(socket: &mut WebSocket, event: &EventView) -> Result<(), ()> {
    let text = serde_json::to_string(event).map_err(|_| ())?;
    socket.send(Message::Text(text.into())).await.map_err(|_| ())
}
