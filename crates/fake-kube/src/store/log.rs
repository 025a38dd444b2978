//! The resourceVersion sequence and the watch log: one short lock, taken last, under which
//! every write gets its version and its event, in that order for every watcher.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::types::WatchEvent;

pub(super) struct WatchLog {
    rv: u64,
    events: VecDeque<Arc<WatchEvent>>,
    /// Watch events kept for resuming; older resourceVersions get 410 Gone.
    len: usize,
    sender: broadcast::Sender<Arc<WatchEvent>>,
}

/// A watch resumed from a resourceVersion: the events since, and the live ones after them.
pub struct Resumed {
    pub backlog: Vec<Arc<WatchEvent>>,
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    pub rv: u64,
}

impl WatchLog {
    pub(super) fn new(len: usize) -> Self {
        let (sender, _) = broadcast::channel(8192);
        Self {
            rv: 1,
            events: VecDeque::new(),
            len: len.max(1),
            sender,
        }
    }

    pub(super) fn rv(&self) -> u64 {
        self.rv
    }

    fn oldest_resumable(&self) -> u64 {
        self.events.front().map(|e| e.rv - 1).unwrap_or(self.rv)
    }

    /// The next resourceVersion, for `event` built with it; logged and sent to watchers.
    pub(super) fn append(&mut self, event: impl FnOnce(u64) -> WatchEvent) {
        self.rv += 1;
        let event = Arc::new(event(self.rv));
        self.events.push_back(event.clone());
        while self.events.len() > self.len {
            self.events.pop_front();
        }
        let _ = self.sender.send(event);
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.sender.subscribe()
    }

    /// The events after `after` and the ones to come, without a gap or a repeat between them;
    /// `Err(oldest)` when `after` is older than the log keeps.
    pub(super) fn resume(&self, after: u64) -> Result<Resumed, u64> {
        let oldest = self.oldest_resumable();
        if after < oldest {
            return Err(oldest);
        }
        Ok(Resumed {
            backlog: self
                .events
                .iter()
                .filter(|e| e.rv > after)
                .cloned()
                .collect(),
            live: self.sender.subscribe(),
            rv: self.rv,
        })
    }
}
