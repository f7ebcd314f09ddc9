//! The breaker's state machine, shared by every clone of the layer, the service and the handle.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use portcullis_core::CircuitOpen;
use tokio::time::Instant;

use crate::config::MAX_MINIMUM_REQUESTS;
use crate::request::{next_breaker_id, ClientRequest};
use crate::Config;

/// What a caller is told to wait while another call is probing a half-open breaker. The probe
/// usually settles within one upstream round trip, so a short wait is the honest answer.
pub const PROBE_IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);

const GAUGE: &str = "portcullis_circuit_breaker_state";

/// Where a breaker stands: the shared [`BreakerState`](portcullis_core::BreakerState), so
/// what [`BreakerHandle::state`] reports and what a response's extension says are one type.
pub use portcullis_core::outcome::BreakerState as State;

/// The value of the `portcullis_circuit_breaker_state` gauge.
fn gauge_value(state: State) -> f64 {
    match state {
        State::Closed => 0.0,
        State::Open => 1.0,
        State::HalfOpen => 2.0,
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probe_in_flight: bool,
        successes: u32,
    },
}

impl Phase {
    fn state(self) -> State {
        match self {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen { .. } => State::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Machine {
    phase: Phase,
    /// Bumped on every transition, so an outcome that belongs to an earlier phase (a call
    /// admitted while closed that finishes after the breaker opened, or a probe that outlives
    /// a `reset()`) is recognised as stale and ignored.
    epoch: u64,
    /// When the last `minimum_requests` requests counted while closed completed, oldest first
    /// (the volume gate); emptied whenever the breaker closes.
    recent: VecDeque<Instant>,
}

pub(crate) struct Shared {
    /// Tells this breaker's marks on a [`ClientRequest`] from other breakers'.
    id: u64,
    name: Arc<str>,
    config: Config,
    machine: Mutex<Machine>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerState")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("machine", &*self.lock())
            .finish()
    }
}

impl Shared {
    pub(crate) fn new(name: Arc<str>, config: Config) -> Arc<Self> {
        metrics::gauge!(GAUGE, "upstream" => name.to_string()).set(gauge_value(State::Closed));
        Arc::new(Self {
            id: next_breaker_id(),
            name,
            config,
            machine: Mutex::new(Machine {
                phase: Phase::Closed { failures: 0 },
                epoch: 0,
                recent: VecDeque::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        // The lock is never held across user code that could panic halfway through a
        // transition, so a poisoned machine is still consistent.
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admit a call, or say why not.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        request: Option<ClientRequest>,
    ) -> Result<Permit, CircuitOpen> {
        let mut m = self.lock();
        let probe = match m.phase {
            Phase::Closed { .. } => false,
            Phase::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err(self.open_error(until - now));
                }
                self.transition(
                    &mut m,
                    Phase::HalfOpen {
                        probe_in_flight: true,
                        successes: 0,
                    },
                );
                true
            }
            Phase::HalfOpen {
                probe_in_flight: true,
                ..
            } => return Err(self.open_error(PROBE_IN_FLIGHT_RETRY_AFTER)),
            Phase::HalfOpen {
                probe_in_flight: false,
                successes,
            } => {
                m.phase = Phase::HalfOpen {
                    probe_in_flight: true,
                    successes,
                };
                true
            }
        };
        if probe {
            tracing::debug!(upstream = %self.name, "circuit breaker letting a probe through");
        }
        Ok(Permit {
            shared: Arc::clone(self),
            epoch: m.epoch,
            probe,
            settled: false,
            request,
        })
    }

    fn open_error(&self, retry_after: Duration) -> CircuitOpen {
        tracing::debug!(upstream = %self.name, ?retry_after, "circuit breaker open; failing fast");
        CircuitOpen {
            upstream: self.name.to_string(),
            retry_after,
        }
    }

    fn record(&self, epoch: u64, probe: bool, success: bool, request: Option<&ClientRequest>) {
        let mut m = self.lock();
        if m.epoch != epoch {
            return;
        }
        match m.phase {
            Phase::Closed { failures } => {
                // An earlier attempt of this request, counted in this phase: the request's
                // outcome is its latest attempt's, and it is still one request.
                let prior_failed = request.and_then(|r| r.swap_mark(self.id, epoch, !success));
                if prior_failed.is_none() {
                    self.count_request(&mut m);
                }
                if success {
                    m.phase = Phase::Closed { failures: 0 };
                    return;
                }
                let failures = if prior_failed == Some(true) {
                    failures
                } else {
                    failures.saturating_add(1)
                };
                if failures >= self.config.failure_threshold && self.volume_reached(&m) {
                    self.open(&mut m, failures);
                } else {
                    m.phase = Phase::Closed { failures };
                }
            }
            Phase::HalfOpen { successes, .. } if probe => {
                if !success {
                    self.open(&mut m, 1);
                    return;
                }
                let successes = successes.saturating_add(1);
                if successes >= self.config.success_threshold {
                    self.transition(&mut m, Phase::Closed { failures: 0 });
                } else {
                    m.phase = Phase::HalfOpen {
                        probe_in_flight: false,
                        successes,
                    };
                }
            }
            Phase::HalfOpen { .. } | Phase::Open { .. } => {}
        }
    }

    /// `minimum_requests`, clamped so a config taken unvalidated cannot make the deque huge.
    fn minimum_requests(&self) -> usize {
        self.config.minimum_requests.clamp(1, MAX_MINIMUM_REQUESTS) as usize
    }

    /// Note that one more request completed now.
    fn count_request(&self, m: &mut Machine) {
        m.recent.push_back(Instant::now());
        while m.recent.len() > self.minimum_requests() {
            m.recent.pop_front();
        }
    }

    /// Whether at least `minimum_requests` requests completed within the last `window`.
    fn volume_reached(&self, m: &Machine) -> bool {
        m.recent.len() >= self.minimum_requests()
            && m.recent
                .front()
                .is_some_and(|oldest| oldest.elapsed() <= self.config.window)
    }

    fn release_probe(&self, epoch: u64) {
        let mut m = self.lock();
        if m.epoch != epoch {
            return;
        }
        if let Phase::HalfOpen {
            probe_in_flight: true,
            successes,
        } = m.phase
        {
            tracing::debug!(upstream = %self.name, "circuit breaker probe abandoned; slot released");
            m.phase = Phase::HalfOpen {
                probe_in_flight: false,
                successes,
            };
        }
    }

    fn open(&self, m: &mut Machine, failures: u32) {
        let until = Instant::now() + self.config.open_timeout;
        self.transition(m, Phase::Open { until });
        tracing::warn!(
            upstream = %self.name,
            failures,
            open_for = ?self.config.open_timeout,
            "circuit breaker opened"
        );
    }

    fn transition(&self, m: &mut Machine, to: Phase) {
        let from = m.phase.state();
        m.phase = to;
        m.epoch = m.epoch.wrapping_add(1);
        let to = to.state();
        if to == State::Closed {
            // A closed breaker earns the right to open again with fresh traffic.
            m.recent.clear();
        }
        match to {
            State::Closed => {
                tracing::info!(upstream = %self.name, %from, "circuit breaker closed")
            }
            State::HalfOpen => {
                tracing::info!(upstream = %self.name, %from, "circuit breaker half-open")
            }
            // `open` logs with the failure count.
            State::Open => {}
        }
        metrics::gauge!(GAUGE, "upstream" => self.name.to_string()).set(gauge_value(to));
    }

    fn reset(&self) {
        let mut m = self.lock();
        let from = m.phase.state();
        if from == State::Closed {
            // Forget the failures counted so far, and any outcome still in flight.
            m.phase = Phase::Closed { failures: 0 };
            m.epoch = m.epoch.wrapping_add(1);
            m.recent.clear();
        } else {
            self.transition(&mut m, Phase::Closed { failures: 0 });
        }
        tracing::info!(upstream = %self.name, %from, "circuit breaker reset");
    }
}

/// The right to make one call; reports its outcome back to the breaker.
///
/// Dropping an unsettled probe permit (the caller went away before the upstream answered)
/// frees the probe slot, so a half-open breaker is never stuck waiting for a probe that
/// will not come back.
#[derive(Debug)]
pub(crate) struct Permit {
    shared: Arc<Shared>,
    epoch: u64,
    probe: bool,
    settled: bool,
    /// The client request this call is an attempt of, when the caller marked it.
    request: Option<ClientRequest>,
}

impl Permit {
    /// The state the call was admitted in: `HalfOpen` for a probe, else `Closed`.
    pub(crate) fn state(&self) -> State {
        if self.probe {
            State::HalfOpen
        } else {
            State::Closed
        }
    }

    pub(crate) fn record(mut self, success: bool) {
        self.settled = true;
        self.shared
            .record(self.epoch, self.probe, success, self.request.as_ref());
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.shared.release_probe(self.epoch);
        }
    }
}

/// A view of one breaker for health checks and admin endpoints.
///
/// Cloning is cheap; every clone shares the state with the layer and services it came from.
#[derive(Clone, Debug)]
pub struct BreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl BreakerHandle {
    /// The upstream this breaker guards.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The settings it runs with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Where it stands. An open breaker whose `open_timeout` has passed still reads
    /// [`State::Open`] until the next call turns into a probe.
    pub fn state(&self) -> State {
        self.shared.lock().phase.state()
    }

    /// Consecutive failed requests counted while closed (0 when open or half-open).
    pub fn consecutive_failures(&self) -> u32 {
        match self.shared.lock().phase {
            Phase::Closed { failures } => failures,
            _ => 0,
        }
    }

    /// How long a call made now would be told to wait, or `None` if it would go through
    /// (closed, or open/half-open with the probe slot free).
    pub fn retry_after(&self) -> Option<Duration> {
        // The clock is read only for an open breaker (the router asks on every request).
        match self.shared.lock().phase {
            Phase::Closed { .. } => None,
            Phase::Open { until } => {
                let now = Instant::now();
                (now < until).then(|| until - now)
            }
            Phase::HalfOpen {
                probe_in_flight: true,
                ..
            } => Some(PROBE_IN_FLIGHT_RETRY_AFTER),
            Phase::HalfOpen { .. } => None,
        }
    }

    /// Close the breaker now (admin action), forgetting failures and in-flight probes.
    pub fn reset(&self) {
        self.shared.reset();
    }
}
