//! A controller's lifecycle: where it is ([`State`]), the step it carries out
//! next, how a teardown in progress ends, and what its end left behind (the
//! failure, how DMA was proven stopped, memory quarantined).
//!
//! Every transition is a method of [`Lifecycle`], so the rules live in one
//! place: a teardown starts once and ends once, a finished controller never
//! moves again, and the step always belongs to the state.

use crate::error::Error;
use crate::link::DmaStop;
pub use crate::nvme::kept::Quarantine;
use crate::nvme::shared::{Phase, Refusal};
use crate::platform::Instant;
use core::time::Duration;

/// Where a controller is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Attached, not touched yet: the first step resets it.
    Discovered,
    /// Being reset (CC.EN cleared, waiting for CSTS.RDY = 0).
    Resetting,
    /// Admin queue set up, waiting for CSTS.RDY = 1.
    Enabling,
    /// Identify, queue creation and namespace discovery in progress.
    Initializing,
    /// Serving I/O.
    Ready,
    /// Orderly detach in progress: draining, deleting queues, shutting down.
    Detaching,
    /// Removal or failure noticed, outstanding commands failed: the device
    /// is being stopped (bus mastering off, or CC.EN = 0 and CSTS.RDY = 0)
    /// before anything it could reach is handed back. Bounded by CAP.TO.
    Stopping,
    /// Detached in an orderly way: the controller was shut down (CC.SHN),
    /// its DMA stopped, all memory returned.
    Detached,
    /// The device is gone; commands failed, memory returned (or, if the
    /// device could not be proven stopped, quarantined).
    Removed,
    /// The controller failed and was given up; commands failed, memory
    /// returned (or quarantined).
    Failed,
}

impl State {
    /// Whether the controller is done for: removed, failed or detached, its
    /// memory returned or quarantined. Nothing moves it out of these states.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Removed | State::Failed | State::Detached)
    }
}

/// Where the lifecycle is inside its state: the step [`Lifecycle`] carries
/// out next, with the deadline it waits against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Backoff {
        until: Instant,
    },
    Start,
    WaitDisabled {
        deadline: Instant,
    },
    WaitEnabled {
        deadline: Instant,
    },
    IdentifyController,
    SetQueueCount,
    CreateCq(u16),
    CreateSq(u16),
    DoorbellBuffers,
    ActiveNamespaces,
    NamespaceDescriptors(u16),
    IdentifyNamespace(u16),
    /// Enabling asynchronous events and arming their requests.
    AsyncEvents,
    Ready,
    /// A reset cleared CC.EN: waiting for CSTS.RDY = 0 before the commands
    /// it failed are handed back and bring-up starts again after `backoff`.
    ResetDisable {
        deadline: Instant,
        backoff: Duration,
    },
    Drain {
        deadline: Instant,
    },
    DeleteSq(u16),
    DeleteCq(u16),
    Shutdown,
    WaitShutdown {
        deadline: Instant,
    },
    /// A teardown waits for proof that the device can no longer reach
    /// memory before anything is handed back.
    StopDma {
        deadline: Instant,
    },
    Finished,
}

/// What one step did.
pub(crate) enum Outcome {
    /// Moved on; try the next step now.
    Progress,
    /// Waiting for the device.
    Waiting,
}

/// Why shared queues refuse submissions once a controller ends in `end`.
pub(crate) fn refusal_of(end: State) -> Refusal {
    match end {
        State::Removed => Refusal::Removed,
        State::Failed => Refusal::Failed,
        _ => Refusal::NotReady,
    }
}

/// How a teardown in progress ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ending {
    state: State,
    error: Error,
}

/// What the I/O rings may be used for in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rings {
    /// Not created, or the controller is not enabled: nothing touches them.
    Closed,
    /// Live on the device (serving, or draining for a detach): doorbells
    /// are written and completions read.
    Live,
    /// A reset's disable or a teardown's stop waits for proof that the
    /// device can no longer reach memory: failed commands are held back.
    Holding,
}

/// The lifecycle of one controller.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    state: State,
    step: Step,
    /// What the teardown in progress ends in.
    ending: Option<Ending>,
    /// Why the controller failed or was removed, once it is finished.
    failure: Option<Error>,
    /// What `step` allows on the I/O rings, kept beside it so the I/O hot
    /// path reads one byte instead of decoding `step`.
    rings: Rings,
    /// Caller commands failed by teardowns.
    failed: u32,
    /// How the device was proven unable to reach memory at the end.
    dma_stop: Option<DmaStop>,
    /// Memory quarantined because no such proof could be had.
    quarantine: Quarantine,
    /// The part of it returned to the platform after a later proof.
    returned: Quarantine,
    /// Set when an orderly detach could not do everything it should (a
    /// queue deletion failed); the shutdown still runs.
    detach_error: Option<Error>,
    /// Whether a bring-up ever finished: the controller served, even if it
    /// ended before anyone looked (a blocking call can bring it up).
    came_up: bool,
}

impl Lifecycle {
    /// A controller attached and not touched yet.
    pub(crate) const fn new() -> Self {
        Self {
            state: State::Discovered,
            step: Step::Start,
            rings: Rings::Closed,
            ending: None,
            failure: None,
            failed: 0,
            dma_stop: None,
            quarantine: Quarantine {
                regions: 0,
                bytes: 0,
            },
            returned: Quarantine {
                regions: 0,
                bytes: 0,
            },
            detach_error: None,
            came_up: false,
        }
    }

    /// The state.
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// The step carried out next.
    pub(crate) fn step(&self) -> Step {
        self.step
    }

    /// Serving I/O with nothing else in progress.
    pub(crate) fn serving(&self) -> bool {
        self.state == State::Ready && self.step == Step::Ready
    }

    /// Finished, or a teardown started: nothing but the teardown moves it.
    pub(crate) fn ending(&self) -> bool {
        self.state.is_finished() || self.ending.is_some()
    }

    /// The error the teardown in progress failed commands with.
    pub(crate) fn ending_error(&self) -> Option<Error> {
        self.ending.map(|e| e.error)
    }

    /// Failed commands are held back: a reset's disable or a teardown's stop
    /// still waits for proof that the device can no longer reach their
    /// buffers.
    #[inline(always)]
    pub(crate) fn holding(&self) -> bool {
        self.rings == Rings::Holding
    }

    /// What the I/O rings may be used for now.
    #[inline(always)]
    pub(crate) fn rings(&self) -> Rings {
        self.rings
    }

    /// Sets `step` and what it allows on the rings.
    fn set_step(&mut self, step: Step) {
        self.step = step;
        self.rings = match step {
            Step::Ready | Step::Drain { .. } => Rings::Live,
            Step::ResetDisable { .. } | Step::StopDma { .. } => Rings::Holding,
            _ => Rings::Closed,
        };
    }

    /// What shared queues may do now (see [`Gate`](crate::nvme::shared::Gate)).
    pub(crate) fn gate(&self) -> (Phase, Refusal) {
        match (self.state, self.step) {
            (State::Ready, Step::Ready) => (Phase::Open, Refusal::NotReady),
            (_, Step::Drain { .. }) => (Phase::Draining, Refusal::NotReady),
            (_, Step::ResetDisable { .. }) => (Phase::Holding, Refusal::NotReady),
            (_, Step::StopDma { .. }) => (
                Phase::Holding,
                self.ending
                    .map_or(Refusal::NotReady, |e| refusal_of(e.state)),
            ),
            (s, _) => (Phase::Down, refusal_of(s)),
        }
    }

    /// Why the controller failed or was removed.
    pub(crate) fn failure(&self) -> Option<Error> {
        self.failure
    }

    /// Caller commands failed by teardowns.
    pub(crate) fn failed_commands(&self) -> u32 {
        self.failed
    }

    /// How the device was proven unable to reach memory at the end.
    pub(crate) fn dma_stop(&self) -> Option<DmaStop> {
        self.dma_stop
    }

    /// Memory quarantined (counted when kept; a later return does not undo it).
    pub(crate) fn quarantine(&self) -> Quarantine {
        self.quarantine
    }

    /// What an orderly detach could not do.
    pub(crate) fn detach_error(&self) -> Option<Error> {
        self.detach_error
    }

    /// Whether a bring-up ever finished.
    pub(crate) fn came_up(&self) -> bool {
        self.came_up
    }

    /// Moves on to `step` within the state.
    pub(crate) fn go(&mut self, step: Step) {
        if !self.ending() {
            self.set_step(step);
        }
    }

    /// Enters `state` at `step` (bring-up and detach phases; a teardown's
    /// states have their own transitions).
    pub(crate) fn enter(&mut self, state: State, step: Step) {
        if !self.ending() {
            self.state = state;
            self.set_step(step);
        }
    }

    /// Bring-up finished: serving.
    pub(crate) fn become_ready(&mut self) {
        self.enter(State::Ready, Step::Ready);
        self.came_up = self.came_up || self.state == State::Ready;
    }

    /// A reset cleared CC.EN: waits for CSTS.RDY = 0 until `deadline`, then
    /// brings the controller up again after `backoff`.
    pub(crate) fn begin_reset(&mut self, deadline: Instant, backoff: Duration) {
        self.enter(State::Resetting, Step::ResetDisable { deadline, backoff });
    }

    /// An orderly detach could not do everything (the first error is kept);
    /// it goes on with the shutdown.
    pub(crate) fn note_detach_error(&mut self, error: Error) {
        self.detach_error.get_or_insert(error);
        self.go(Step::Shutdown);
    }

    /// Starts the end in `end` with `failed` caller commands failed with
    /// `error`: the device's DMA stop is awaited until `deadline`. Returns
    /// false (and changes nothing) when a teardown already started.
    pub(crate) fn begin_end(
        &mut self,
        end: State,
        error: Error,
        failed: usize,
        deadline: Instant,
    ) -> bool {
        if self.ending() {
            return false;
        }
        self.failed = self.failed.saturating_add(failed as u32);
        self.ending = Some(Ending { state: end, error });
        self.state = State::Stopping;
        self.set_step(Step::StopDma { deadline });
        true
    }

    /// Ends the teardown in progress with `proof` (`None`: none could be
    /// had, the memory is quarantined). Returns the state reached, `None`
    /// when no teardown was in progress.
    pub(crate) fn finish(&mut self, proof: Option<DmaStop>) -> Option<State> {
        let ending = self.ending.take()?;
        self.dma_stop = proof;
        self.state = ending.state;
        self.set_step(Step::Finished);
        if ending.state != State::Detached {
            self.failure = Some(ending.error);
        }
        Some(ending.state)
    }

    /// Counts `freed` as returned from quarantine.
    pub(crate) fn note_returned(&mut self, freed: Quarantine) {
        self.returned.merge(freed);
    }

    /// What was returned from quarantine.
    pub(crate) fn returned(&self) -> Quarantine {
        self.returned
    }

    /// Counts `regions` of `bytes` more quarantined.
    pub(crate) fn add_quarantine(&mut self, regions: u32, bytes: u64) {
        self.quarantine.regions = self.quarantine.regions.saturating_add(regions);
        self.quarantine.bytes = self.quarantine.bytes.saturating_add(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ns: u64) -> Instant {
        Instant::from_nanos(ns)
    }

    #[test]
    fn a_teardown_starts_once_and_ends_once() {
        let mut l = Lifecycle::new();
        l.become_ready();
        assert!(l.begin_end(State::Removed, Error::DeviceRemoved, 3, at(10)));
        assert_eq!(l.state(), State::Stopping);
        assert!(l.holding());
        assert!(!l.begin_end(State::Failed, Error::ControllerFailed, 5, at(20)));
        assert_eq!(l.failed_commands(), 3);
        assert_eq!(l.ending_error(), Some(Error::DeviceRemoved));
        assert_eq!(l.finish(Some(DmaStop::Gone)), Some(State::Removed));
        assert_eq!(l.finish(None), None);
        assert_eq!(l.state(), State::Removed);
        assert_eq!(l.failure(), Some(Error::DeviceRemoved));
        assert_eq!(l.dma_stop(), Some(DmaStop::Gone));
        assert!(l.came_up());
    }

    #[test]
    fn a_finished_or_stopping_controller_does_not_move() {
        let mut l = Lifecycle::new();
        assert!(l.begin_end(State::Detached, Error::Aborted, 0, at(1)));
        l.become_ready();
        l.go(Step::Shutdown);
        l.begin_reset(at(2), Duration::from_millis(1));
        assert_eq!(
            (l.state(), l.step()),
            (State::Stopping, Step::StopDma { deadline: at(1) })
        );
        assert_eq!(l.finish(None), Some(State::Detached));
        l.enter(State::Ready, Step::Ready);
        assert_eq!((l.state(), l.step()), (State::Detached, Step::Finished));
        // An orderly end is no failure, and did not come up.
        assert_eq!(l.failure(), None);
        assert!(!l.came_up());
    }

    #[test]
    fn a_detach_error_keeps_the_first_and_goes_on_to_the_shutdown() {
        let mut l = Lifecycle::new();
        l.enter(State::Detaching, Step::DeleteSq(0));
        l.note_detach_error(Error::Aborted);
        l.note_detach_error(Error::ControllerFailed);
        assert_eq!(l.detach_error(), Some(Error::Aborted));
        assert_eq!(l.step(), Step::Shutdown);
    }

    #[test]
    fn quarantine_adds_up() {
        let mut l = Lifecycle::new();
        l.add_quarantine(2, 8192);
        l.add_quarantine(1, 4096);
        assert_eq!(
            l.quarantine(),
            Quarantine {
                regions: 3,
                bytes: 12288
            }
        );
    }
}
