//! The warm cache in the simulation: what a step loses on an empty Docker store, and the
//! pool's volumes that spare it, handed over as the operator hands its claims.

use std::cmp::Ordering;

use crate::units::Seconds;

/// What a runner's first step pays when its Docker store is empty (its image pulls and a
/// build from no layers), and the pool's warm cache that spares it. A runner keeps its store
/// between steps; without a cache each new runner starts empty, while runners online when the
/// run starts are warm (the pool has served before).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ColdStart {
    /// Seconds a step takes longer on an empty store; 0 leaves the cost out.
    pub cost: Seconds,
    /// The warm cache's `retain` (volumes kept when the pool shrinks), or None for no cache.
    /// As the operator does, a new runner takes the free volume used last, a volume goes
    /// warm with its first step, and free volumes beyond `retain` are deleted, coldest first,
    /// once free for the scale-down delay.
    pub cache_retain: Option<u32>,
}

/// One cache volume of the model.
#[derive(Debug, Clone)]
struct Volume {
    /// A step ran on it: it holds images and layers.
    warm: bool,
    in_use: bool,
    /// When its last user let it go (or it was made).
    freed_at: Seconds,
    deleted: bool,
}

/// A pool's cache volumes (none without a cache).
pub(super) struct Volumes {
    retain: Option<u32>,
    volumes: Vec<Volume>,
    peak: u32,
}

impl Volumes {
    pub(super) fn new(retain: Option<u32>) -> Self {
        Self {
            retain,
            volumes: Vec::new(),
            peak: 0,
        }
    }

    /// With a cache, a new runner mounts the free volume used last, or a new one: the
    /// volume, and whether it is warm.
    pub(super) fn mount(&mut self, now: Seconds, delay: Seconds) -> Option<(usize, bool)> {
        self.retain?;
        self.prune(now, delay);
        let free = (0..self.volumes.len())
            .filter(|&v| !self.volumes[v].deleted && !self.volumes[v].in_use)
            .max_by(|&a, &b| self.warmth(a, b));
        let v = free.unwrap_or_else(|| {
            self.volumes.push(Volume {
                warm: false,
                in_use: false,
                freed_at: now,
                deleted: false,
            });
            self.volumes.len() - 1
        });
        self.volumes[v].in_use = true;
        self.peak = self.peak.max(self.live());
        Some((v, self.volumes[v].warm))
    }

    /// A step ran on volume `v`.
    pub(super) fn warmed(&mut self, v: usize) {
        self.volumes[v].warm = true;
    }

    /// Its runner is gone.
    pub(super) fn release(&mut self, v: usize, now: Seconds) {
        self.volumes[v].in_use = false;
        self.volumes[v].freed_at = now;
    }

    /// The most volumes held at once.
    pub(super) fn peak(&self) -> u32 {
        self.peak
    }

    fn live(&self) -> u32 {
        self.volumes.iter().filter(|v| !v.deleted).count() as u32
    }

    /// Volumes by warmth: one that holds a store first, then the one let go last.
    fn warmth(&self, a: usize, b: usize) -> Ordering {
        let (a, b) = (&self.volumes[a], &self.volumes[b]);
        a.warm.cmp(&b.warm).then(a.freed_at.total_cmp(&b.freed_at))
    }

    /// Delete free volumes beyond `retain`, coldest first, once free for the scale-down delay.
    pub(super) fn prune(&mut self, now: Seconds, delay: Seconds) {
        let Some(retain) = self.retain else {
            return;
        };
        let mut live = self.live();
        while live > retain {
            let coldest = (0..self.volumes.len())
                .filter(|&v| {
                    let volume = &self.volumes[v];
                    !volume.deleted && !volume.in_use && now - volume.freed_at >= delay
                })
                .min_by(|&a, &b| self.warmth(a, b));
            let Some(v) = coldest else {
                return;
            };
            self.volumes[v].deleted = true;
            live -= 1;
        }
    }
}
