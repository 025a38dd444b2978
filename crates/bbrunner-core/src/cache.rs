//! Warm runners: which persistent Docker cache volume (a PersistentVolumeClaim per runner
//! slot) each new runner pod mounts, which claims to create and which to delete.
//!
//! One image store must never be opened by two daemons, so a claim is handed to one pod at a
//! time and on to the next only once that pod is over. The decision reads what is observed
//! (pods and the claims they mount, and the claims' own marks), never the operator's memory,
//! so that a restarted operator, or two during an upgrade, decide alike. Kubernetes enforces
//! the same from its side (`ReadWriteOncePod`), and dind's start script from the daemon's
//! (a lock file on the volume).

use crate::units::Seconds;

/// A pool's cache, as its spec asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// Off: no pod mounts a claim, and the claims go once free for `delete_after`.
    pub enabled: bool,
    /// How many claims to keep when the pool shrinks (by default the pool's `max`).
    pub retain: u32,
    /// How long a claim stays free before it may be deleted (the pool's scale-down delay).
    pub delete_after: Seconds,
}

/// The name of a pool's claim for slot `slot`.
pub fn claim_name(pool: &str, slot: u32) -> String {
    format!("{pool}-cache-{slot}")
}

/// The slot of a claim named by [`claim_name`] for `pool`.
pub fn slot_of(pool: &str, claim: &str) -> Option<u32> {
    let digits = claim.strip_prefix(pool)?.strip_prefix("-cache-")?;
    // `01` would name the slot of `1` a second time.
    if digits.starts_with('0') && digits.len() > 1 {
        return None;
    }
    digits.parse().ok()
}

/// One of the pool's claims.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedClaim {
    pub name: String,
    pub created_at: Seconds,
    /// Deleted, and held only by Kubernetes' protection until no pod mounts it.
    pub terminating: bool,
    /// The pod the claim was last handed to, and when (the claim's own marks).
    pub handed_to: Option<Handover>,
    /// When a pod could not be scheduled with it (the claim's mark): it is passed over for
    /// [`SKIP_FOR`].
    pub skipped_at: Option<Seconds>,
}

/// A claim's mark of the pod it was handed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    pub pod: String,
    pub at: Seconds,
}

/// A pod of the pool that mounts a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimUser {
    pub pod: String,
    pub claim: String,
    /// Its containers may still run: the pod exists and has not Succeeded or Failed.
    pub live: bool,
    /// The scheduler has not placed it: since when, and why, in its words.
    pub unschedulable: Option<Unschedulable>,
    /// Since when it is on its way out (deleted, or its runner drained while idle): its claim
    /// will be free within seconds.
    pub leaving_since: Option<Seconds>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Unschedulable {
    pub since: Seconds,
    pub message: String,
}

/// The runner pods a reconcile creates: how many, and the names of those recreated for a
/// registered runner (their names were known before, so a claim may already be theirs).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewPods {
    pub count: usize,
    pub recreated: Vec<String>,
}

impl NewPods {
    /// `count` pods for new runners.
    pub fn fresh(count: usize) -> Self {
        Self {
            count,
            recreated: Vec::new(),
        }
    }
}

/// The pool's pods as the claims see them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolPods {
    /// The claims existing pods mount.
    pub mounts: Vec<ClaimUser>,
    /// Pods not created yet whose runner is registered (its Secret exists): the operator
    /// marks a claim, then creates the pod, and another operator must not take the claim in
    /// between. A pod that came and went is not coming.
    pub coming: Vec<String>,
}

/// How long a handover to a coming pod keeps the claim, should the pod never be created.
pub const HANDOVER_GRACE: Seconds = 120.0;
/// How long a pod may wait for the scheduler because of its claim (a volume bound to a full
/// or lost node or zone, a claim its storage class never provisions) before the claim is
/// skipped: a runner waits for room no longer than a start takes.
pub const SCHEDULING_BOUND: Seconds = 120.0;
/// How long a skipped claim is passed over before a pod may try it again.
pub const SKIP_FOR: Seconds = 1800.0;
/// How long a new pod waits for the claim of a pod on its way out rather than start cold on
/// a new claim (an ephemeral runner's successor, a rollout's replacement).
pub const LEAVING_WAIT: Seconds = 60.0;

/// Whether the scheduler's words blame the pod's volumes (`volume node affinity conflict`,
/// `unbound immediate PersistentVolumeClaims`, `didn't find available persistent volumes`, a
/// ReadWriteOncePod claim in use, a claim not found): another claim may fit where this one
/// does not. Not memory, CPU or taints: no claim helps with those.
pub fn blames_volumes(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("volume") || message.contains("persistentvolumeclaim")
}

/// What to do with the pool's claims at one reconcile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CachePlan {
    /// Recreated pods that get back the claim already handed to them (their pod went before
    /// it mounted it, or an operator stopped between marking the claim and creating the pod).
    pub resumed: Vec<Resume>,
    /// For each other new pod, in order, the claim it mounts: existing ones warmest first,
    /// then new ones to create.
    pub handovers: Vec<ClaimChoice>,
    /// Pods the scheduler refused because of their claim for [`SCHEDULING_BOUND`]: the claim
    /// is marked skipped and the pod deleted, to be recreated on another claim.
    pub skip: Vec<Skip>,
    /// Free claims past `retain`, or of a pool whose cache is off, free for long enough.
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub pod: String,
    pub claim: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub claim: String,
    pub pod: String,
    /// How long the pod waited, and the scheduler's words.
    pub waited: Seconds,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimChoice {
    /// A free claim: warm if it was used before.
    Reuse { claim: String, warm: bool },
    /// A new claim, for a new slot.
    Create { claim: String },
    /// No claim: one was skipped within [`SKIP_FOR`] and none is free, so the pod starts
    /// with an empty store rather than wait on a new claim that may fail the same way.
    Uncached,
    /// Not yet: this claim's pod is on its way out, and the new pod is created on it at a
    /// later reconcile, warm, rather than now on a new, cold claim.
    Wait { claim: String },
}

impl ClaimChoice {
    pub fn claim(&self) -> Option<&str> {
        match self {
            ClaimChoice::Reuse { claim, .. } | ClaimChoice::Create { claim } => Some(claim),
            ClaimChoice::Uncached | ClaimChoice::Wait { .. } => None,
        }
    }
}

/// The state of each claim, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheCounts {
    /// Mounted by a live pod, or just handed to one.
    pub in_use: u32,
    /// Free, and used before: the next pod starts warm on it.
    pub warm: u32,
    /// Free, never used.
    pub cold: u32,
    /// Free, passed over for a while: a pod could not be scheduled with it.
    pub skipped: u32,
    pub terminating: u32,
}

impl CacheCounts {
    pub fn total(&self) -> u32 {
        self.in_use + self.warm + self.cold + self.skipped + self.terminating
    }
}

/// Skipped within [`SKIP_FOR`].
fn skipped(claim: &ObservedClaim, now: Seconds) -> bool {
    claim.skipped_at.is_some_and(|at| now - at < SKIP_FOR)
}

/// Whether a claim is in use: a live pod mounts it, or it was handed to a pod that is coming,
/// within the grace.
fn in_use(claim: &ObservedClaim, pods: &PoolPods, now: Seconds) -> bool {
    let mounted = pods.mounts.iter().any(|u| u.claim == claim.name && u.live);
    let awaited = claim
        .handed_to
        .as_ref()
        .is_some_and(|h| now - h.at < HANDOVER_GRACE && pods.coming.contains(&h.pod));
    mounted || awaited
}

/// When a claim was last used: its last handover, else its creation.
fn last_used(claim: &ObservedClaim) -> Seconds {
    claim.handed_to.as_ref().map_or(claim.created_at, |h| h.at)
}

pub fn counts(claims: &[ObservedClaim], pods: &PoolPods, now: Seconds) -> CacheCounts {
    let mut counts = CacheCounts::default();
    for claim in claims {
        if claim.terminating {
            counts.terminating += 1;
        } else if in_use(claim, pods, now) {
            counts.in_use += 1;
        } else if skipped(claim, now) {
            counts.skipped += 1;
        } else if claim.handed_to.is_some() {
            counts.warm += 1;
        } else {
            counts.cold += 1;
        }
    }
    counts
}

impl CachePlan {
    /// The claims and pods as they will be once the plan is carried out: handed-over claims
    /// awaited by their new pods, deleted ones terminating, created ones added.
    pub fn applied(
        &self,
        claims: &[ObservedClaim],
        pods: &PoolPods,
        now: Seconds,
    ) -> (Vec<ObservedClaim>, PoolPods) {
        let new_pod = |claim: &str| format!("new pod on {claim}");
        let handover = |claim: &str| Handover {
            pod: new_pod(claim),
            at: now,
        };
        let handed = |name: &str| {
            self.handovers.iter().any(|h| h.claim() == Some(name))
                || self.resumed.iter().any(|r| r.claim == name)
        };
        let mut after: Vec<ObservedClaim> = claims
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if self.delete.contains(&c.name) {
                    c.terminating = true;
                }
                if handed(&c.name) {
                    c.handed_to = Some(handover(&c.name));
                }
                if self.skip.iter().any(|s| s.claim == c.name) {
                    c.skipped_at = Some(now);
                }
                c
            })
            .collect();
        after.extend(self.handovers.iter().filter_map(|h| match h {
            ClaimChoice::Create { claim } => Some(ObservedClaim {
                name: claim.clone(),
                created_at: now,
                terminating: false,
                handed_to: Some(handover(claim)),
                skipped_at: None,
            }),
            ClaimChoice::Reuse { .. } | ClaimChoice::Uncached | ClaimChoice::Wait { .. } => None,
        }));
        let mut pods = pods.clone();
        // Skipped pods are deleted: they mount nothing any more.
        pods.mounts
            .retain(|u| !self.skip.iter().any(|s| s.pod == u.pod));
        let claims = self.handovers.iter().filter_map(ClaimChoice::claim);
        let resumed = self.resumed.iter().map(|r| r.claim.as_str());
        pods.coming.extend(claims.chain(resumed).map(new_pod));
        (after, pods)
    }
}

/// The claims for the `new_pods` of `pool`, the claims to skip and the claims to delete.
pub fn plan(
    pool: &str,
    settings: &CacheSettings,
    claims: &[ObservedClaim],
    pods: &PoolPods,
    new_pods: &NewPods,
    now: Seconds,
) -> CachePlan {
    let skip: Vec<Skip> = pods
        .mounts
        .iter()
        .filter(|u| u.live)
        .filter_map(|u| {
            let stuck = u.unschedulable.as_ref()?;
            let waited = now - stuck.since;
            (waited >= SCHEDULING_BOUND && blames_volumes(&stuck.message)).then(|| Skip {
                claim: u.claim.clone(),
                pod: u.pod.clone(),
                waited,
                message: stuck.message.clone(),
            })
        })
        .collect();
    let passed_over = |c: &ObservedClaim| skipped(c, now) || skip.iter().any(|s| s.claim == c.name);
    let enabled = settings.enabled;
    // A recreated pod takes back the claim handed to it, unless it is passed over.
    let resumed: Vec<Resume> = new_pods
        .recreated
        .iter()
        .filter(|_| enabled)
        .filter_map(|pod| {
            let claim = claims.iter().find(|c| {
                !c.terminating
                    && !passed_over(c)
                    && c.handed_to.as_ref().is_some_and(|h| &h.pod == pod)
                    && !pods.mounts.iter().any(|u| u.claim == c.name && u.live)
            })?;
            Some(Resume {
                pod: pod.clone(),
                claim: claim.name.clone(),
            })
        })
        .collect();
    let resumed_claim = |c: &ObservedClaim| resumed.iter().any(|r| r.claim == c.name);
    let mut free: Vec<&ObservedClaim> = claims
        .iter()
        .filter(|c| !c.terminating && !in_use(c, pods, now) && !passed_over(c) && !resumed_claim(c))
        .collect();
    // Warmest first: the most recent handover; never-used claims last, lowest slot first.
    free.sort_by(|a, b| {
        let used = |c: &ObservedClaim| c.handed_to.as_ref().map(|h| h.at);
        used(b)
            .partial_cmp(&used(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| slot_of(pool, &a.name).cmp(&slot_of(pool, &b.name)))
    });
    let others = if enabled {
        new_pods.count.saturating_sub(resumed.len())
    } else {
        0
    };
    let reused = others.min(free.len());
    let mut handovers: Vec<ClaimChoice> = free[..reused]
        .iter()
        .map(|c| ClaimChoice::Reuse {
            claim: c.name.clone(),
            warm: c.handed_to.is_some(),
        })
        .collect();
    // A claim whose every user is on its way out is free within seconds: new pods wait for
    // it rather than start cold.
    let leaving = claims.iter().filter(|c| {
        let users: Vec<&ClaimUser> = pods
            .mounts
            .iter()
            .filter(|u| u.claim == c.name && u.live)
            .collect();
        !c.terminating
            && !passed_over(c)
            && !users.is_empty()
            && users.iter().all(|u| {
                u.leaving_since
                    .is_some_and(|since| now - since < LEAVING_WAIT)
            })
    });
    handovers.extend(leaving.take(others - reused).map(|c| ClaimChoice::Wait {
        claim: c.name.clone(),
    }));
    // After a skip, no new claim: it would likely fail as the skipped one did.
    let wary = claims.iter().any(passed_over);
    let mut taken_slots: Vec<u32> = claims
        .iter()
        .filter_map(|c| slot_of(pool, &c.name))
        .collect();
    let mut next_slot = 0;
    let mut created = 0;
    while handovers.len() < others {
        if wary {
            handovers.push(ClaimChoice::Uncached);
            continue;
        }
        while taken_slots.contains(&next_slot) {
            next_slot += 1;
        }
        taken_slots.push(next_slot);
        created += 1;
        handovers.push(ClaimChoice::Create {
            claim: claim_name(pool, next_slot),
        });
    }
    // Past `retain` (none when the cache is off), the coldest free claims go, once free for
    // the delay: skipped ones first.
    let kept = claims.iter().filter(|c| !c.terminating).count() + created;
    let retain = if enabled { settings.retain } else { 0 };
    let excess = kept.saturating_sub(retain as usize);
    let skipped_free = claims
        .iter()
        .filter(|c| !c.terminating && !in_use(c, pods, now) && skipped(c, now));
    let delete = skipped_free
        .chain(free[reused..].iter().rev().copied())
        .filter(|c| now - last_used(c) >= settings.delete_after)
        .take(excess)
        .map(|c| c.name.clone())
        .collect();
    CachePlan {
        resumed,
        handovers,
        skip,
        delete,
    }
}

#[cfg(test)]
mod tests;
