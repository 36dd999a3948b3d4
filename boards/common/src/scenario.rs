//! Scenarios: one kernel image, the command line picks what it does. A
//! scenario is a function from the board (`B`, what the board hands every
//! scenario) to an [`Outcome`].

use core::fmt::{self, Write as _};

use crate::cmdline::Args;
use crate::marker;

/// Longest failure text kept (keeps `Outcome` small).
pub const FAILURE_LEN: usize = 112;

/// Why a scenario failed (one line).
pub struct Failure(pub heapless::String<FAILURE_LEN>);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a scenario returns.
pub type Outcome = Result<(), Failure>;

/// A named scenario of a board whose scenarios take a `B`.
pub struct Scenario<B: 'static> {
    /// Name on the command line (`scenario=NAME`).
    pub name: &'static str,
    /// One line for the list printed on an unknown name.
    pub about: &'static str,
    /// The body.
    pub run: fn(&B) -> Outcome,
}

/// Runs the scenario of `all` named `name` on `board`; an unknown name
/// lists the known ones and fails.
pub fn run<B>(all: &[Scenario<B>], name: &str, board: &B) -> Outcome {
    let Some(scenario) = all.iter().find(|s| s.name == name) else {
        for s in all {
            log::error!("known scenario {}: {}", s.name, s.about);
        }
        let mut text = heapless::String::new();
        let _ = write!(text, "unknown scenario {name}");
        return Err(Failure(text));
    };
    log::info!("scenario {}: {}", scenario.name, scenario.about);
    (scenario.run)(board)
}

/// Runs the scenario the command line names on `board` and reports how it
/// ended: `@@PASS`, or the failure logged and `@@FAIL reason`. Whether it
/// passed (the board ends the machine with the matching status).
pub fn run_and_report<B>(all: &[Scenario<B>], args: &Args, board: &B) -> bool {
    match run(all, args.scenario(), board) {
        Ok(()) => {
            marker!("PASS");
            true
        }
        Err(failure) => {
            log::error!("scenario failed: {failure}");
            marker!("FAIL {failure}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passes(_: &u8) -> Outcome {
        Ok(())
    }

    #[test]
    fn the_named_scenario_runs_and_an_unknown_name_fails() {
        let all = [Scenario {
            name: "boot",
            about: "boots",
            run: passes,
        }];
        assert!(run(&all, "boot", &0).is_ok());
        let unknown = run(&all, "nope", &0).map_err(|f| f.0);
        assert_eq!(unknown.unwrap_err().as_str(), "unknown scenario nope");
        assert!(run_and_report(&all, &Args::new("scenario=boot"), &0));
        assert!(!run_and_report(&all, &Args::new("scenario=nope"), &0));
    }
}
