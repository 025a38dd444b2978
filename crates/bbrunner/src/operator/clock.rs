//! The operator's one clock for its time-based rules (poll interval, scale-down delay,
//! occupancy, registration TTL, deletion grace, queue waits). In a cluster it is the wall
//! clock. A simulation (the demo, the benchmark against the simulator) runs it faster, as
//! fake-bitbucket runs its own: both count from the same origin at the same scale, so a
//! runner's `updated_on` and the operator's "now" agree, and the operator behaves as the
//! simulator does with the same pool spec.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// Unix seconds at which this clock and the wall clock agree.
    origin: f64,
    /// Seconds of this clock per wall-clock second.
    scale: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::wall()
    }
}

fn wall_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Clock {
    pub fn wall() -> Self {
        Self {
            origin: 0.0,
            scale: 1.0,
        }
    }

    /// `scale` times faster than the wall clock from `origin` (Unix seconds) on.
    pub fn scaled(origin: f64, scale: f64) -> Self {
        Self { origin, scale }
    }

    /// Now, in Unix seconds of this clock.
    pub fn now(&self) -> f64 {
        self.at(wall_seconds())
    }

    /// A wall-clock instant (a Kubernetes timestamp) on this clock.
    pub fn at(&self, wall: f64) -> f64 {
        self.origin + (wall - self.origin) * self.scale
    }

    /// A Kubernetes timestamp (creation, deletion, condition transition) on this clock.
    pub fn at_time(&self, time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
        self.at(time.0.as_millisecond() as f64 / 1000.0)
    }

    /// Seconds of this clock in one wall-clock second.
    pub fn per_wall_second(&self) -> f64 {
        self.scale
    }

    /// The real time to wait for `d` of this clock.
    pub fn real(&self, d: Duration) -> Duration {
        d.div_f64(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_clock_stretches_durations_from_its_origin() {
        let clock = Clock::scaled(1_000.0, 30.0);
        assert_eq!(clock.at(1_000.0), 1_000.0);
        assert_eq!(clock.at(1_010.0), 1_300.0);
        assert_eq!(
            clock.real(Duration::from_secs(15)),
            Duration::from_millis(500)
        );
        let wall = Clock::wall();
        assert_eq!(wall.at(1_234.5), 1_234.5);
        assert_eq!(wall.real(Duration::from_secs(15)), Duration::from_secs(15));
        assert!((wall.now() - wall_seconds()).abs() < 1.0);
    }
}
