//! The core's own time, made from the host's wall clock.
//!
//! Hosts stamp every input with their wall clock (ms since the epoch), and a wall clock can
//! step: NTP corrects it, a virtual machine is restored from a snapshot, a person sets it.
//! Clamping a backward step (keeping the latest time seen) would freeze every timer until the
//! wall clock caught up again, which after a step of a day is a day without keep-alives,
//! retries or reconnects. So the core keeps a timeline of its own: the wall clock plus the sum
//! of every backward step seen. A backward step adds to that sum and the timeline stands still
//! for an instant instead of for the size of the step; a timer set before it fires after the
//! time it asked for (at most the time between the last input and the step later).
//!
//! A forward step cannot be told apart from time passing (a suspended laptop, a slow host):
//! the timeline moves with it, so timers fire early, never late. Everything a timer guards
//! survives firing early: a keep-alive ping sent sooner, a request given up and retried, a
//! credential renewed ahead of time.
//!
//! Instants that belong to the wall clock cross here: an expiry the Platform names is placed
//! on the timeline by where the wall clock stands when it arrives ([`Clock::onto_timeline`]), and
//! what leaves the core — the host's timers and request deadlines, saved expiries, the
//! expiries shown to the app — goes back to the wall clock ([`Clock::to_wall`]). So a
//! Platform instant learnt before a backward step keeps its place in real time, and one learnt
//! after it is read with the clock as it is now, as any client reading its clock would.

/// The core's timeline (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Clock {
    /// The latest time on the timeline.
    now: u64,
    /// The timeline minus the wall clock: the sum of the backward steps seen.
    stepped_back: u64,
}

impl Clock {
    /// A timeline that starts where the wall clock stands.
    pub(crate) fn starting_at(wall: u64) -> Self {
        Self {
            now: wall,
            stepped_back: 0,
        }
    }

    /// Takes a wall-clock reading and returns the time on the timeline: never earlier than the
    /// last one, and a step back only stops it for this instant.
    pub(crate) fn advance(&mut self, wall: u64) -> u64 {
        let on_timeline = wall.saturating_add(self.stepped_back);
        if on_timeline < self.now {
            self.stepped_back += self.now - on_timeline;
        } else {
            self.now = on_timeline;
        }
        self.now
    }

    /// The latest time on the timeline.
    pub(crate) fn now(self) -> u64 {
        self.now
    }

    /// The wall clock as of the latest reading.
    pub(crate) fn wall_now(self) -> u64 {
        self.to_wall(self.now)
    }

    /// A wall-clock instant (an expiry the Platform names) on the timeline.
    pub(crate) fn onto_timeline(self, wall: u64) -> u64 {
        wall.saturating_add(self.stepped_back)
    }

    /// A time on the timeline as the wall clock reads it (for the host and for what is saved).
    pub(crate) fn to_wall(self, at: u64) -> u64 {
        at.saturating_sub(self.stepped_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_backward_step_stops_the_timeline_for_an_instant_not_for_the_step() {
        let mut clock = Clock::starting_at(100 * HOUR);
        assert_eq!(clock.advance(100 * HOUR + 5_000), 100 * HOUR + 5_000);
        // The wall clock goes back a day: the timeline stays, then moves with the wall clock.
        assert_eq!(clock.advance(76 * HOUR + 5_000), 100 * HOUR + 5_000);
        assert_eq!(clock.advance(76 * HOUR + 6_000), 100 * HOUR + 6_000);
        // What the host's timer must wait for is read on its (stepped) wall clock.
        assert_eq!(clock.to_wall(100 * HOUR + 8_000), 76 * HOUR + 8_000);
        assert_eq!(clock.wall_now(), 76 * HOUR + 6_000);
    }

    #[test]
    fn a_forward_step_moves_the_timeline_with_it() {
        let mut clock = Clock::starting_at(HOUR);
        assert_eq!(clock.advance(5 * HOUR), 5 * HOUR);
        assert_eq!(
            (clock.onto_timeline(6 * HOUR), clock.to_wall(6 * HOUR)),
            (6 * HOUR, 6 * HOUR)
        );
    }

    #[test]
    fn a_platform_instant_is_read_with_the_clock_as_it_stands_when_it_arrives() {
        let mut clock = Clock::starting_at(10 * HOUR);
        clock.advance(9 * HOUR);
        // An expiry an hour after the (stepped) wall clock is an hour from now on the timeline.
        let expiry = clock.onto_timeline(10 * HOUR);
        assert_eq!(expiry - clock.now(), HOUR);
        // Saved, it reads as the wall-clock instant it came as.
        assert_eq!(clock.to_wall(expiry), 10 * HOUR);
    }

    #[test]
    fn extreme_readings_saturate_instead_of_overflowing() {
        let mut clock = Clock::starting_at(u64::MAX);
        assert_eq!(clock.advance(0), u64::MAX);
        assert_eq!(clock.onto_timeline(u64::MAX), u64::MAX);
        assert_eq!(clock.to_wall(0), 0);
    }
}
