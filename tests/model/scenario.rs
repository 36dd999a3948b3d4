//! The scenario: how each simulated controller behaves and the random
//! sequence of API calls and device events a case runs.

use super::*;

/// How one simulated controller behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Knobs {
    /// MQES + 1 (the driver clamps its queue depth to it).
    pub(crate) depth: u16,
    /// 0: disables at once, 1: within CAP.TO, 2: slower than CAP.TO.
    pub(crate) slow_disable: u8,
    /// 0: at once, 1: within the shutdown deadline, 2: past it.
    pub(crate) slow_shutdown: u8,
    /// Becomes ready after 20 ms instead of at once.
    pub(crate) slow_ready: bool,
    /// Offers Doorbell Buffer Config.
    pub(crate) shadow: bool,
}

/// A controller quick at every step, with 4-entry queues: the regression
/// tests' default.
pub(crate) const QUICK: Knobs = Knobs {
    depth: 4,
    slow_disable: 0,
    slow_shutdown: 0,
    slow_ready: false,
    shadow: false,
};

impl Knobs {
    pub(crate) fn spec(&self, serial: &str) -> ControllerSpec {
        let mut spec = ControllerSpec::default()
            .serial(serial)
            .namespace(NamespaceSpec::new(NS_BLOCKS, BLOCK as u32))
            .mqes(self.depth - 1)
            // CAP.TO = 1: 500 ms to enable or disable.
            .timeout(1)
            .shadow_doorbells(self.shadow);
        match self.slow_disable {
            0 => {}
            1 => spec = spec.disable_delay(Duration::from_millis(30)),
            _ => spec = spec.disable_delay(Duration::from_secs(2)),
        }
        match self.slow_shutdown {
            0 => {}
            1 => spec = spec.shutdown_delay(Duration::from_millis(30)),
            _ => spec = spec.shutdown_delay(Duration::from_millis(400)),
        }
        if self.slow_ready {
            spec = spec.ready_delay(Duration::from_millis(20));
        }
        spec
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Blocking {
    Read,
    Write,
    Flush,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Device {
    Remove,
    Glitch,
    Cfs,
    Hang,
    Unhang,
    MemoryDecodingOff,
    IgnoreConfigWrites(bool),
    BouncePresence,
    BounceLink,
    LinkFlap,
    /// A controller into the device's slot if it is empty (the same serial
    /// again when `same`, so the driver reports it returned).
    Insert {
        same: bool,
    },
    AttentionButton,
    Hold(bool),
    /// Reads and writes of LBAs 8 to 15 fail with a media error (or, with
    /// `false`, succeed again).
    MediaErrors(bool),
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// A split-phase read or write of `blocks` at `lba` on queue `q` of the
    /// `c`-th attached controller; the buffer 512-byte aligned when
    /// `unaligned` (a first PRP entry with an offset), else page aligned.
    Submit {
        c: u8,
        q: u8,
        write: bool,
        lba: u8,
        blocks: u8,
        unaligned: bool,
    },
    Blocking {
        c: u8,
        op: Blocking,
        lba: u8,
        blocks: u8,
    },
    Poll {
        c: u8,
        q: u8,
    },
    /// A read or write of `blocks` at `lba` through a `BlockDevice` on the
    /// `c`-th controller with two bounce buffers of two blocks: a request
    /// in several pieces and commands, pipelined.
    BlockDevice {
        c: u8,
        write: bool,
        lba: u8,
        blocks: u8,
    },
    /// `ring_doorbells` of the `c`-th controller.
    Ring {
        c: u8,
    },
    /// Advance the clock by `ms`, let the device do background work, tick.
    Tick {
        ms: u16,
    },
    Detach {
        c: u8,
    },
    Scan,
    /// Event `ev` on the `d`-th simulated controller.
    Device {
        d: u8,
        ev: Device,
    },
    /// Complete up to `n` held commands.
    Release {
        n: u8,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub(crate) first: Knobs,
    pub(crate) second: Option<Knobs>,
    pub(crate) bus0: Option<Knobs>,
    pub(crate) depth: u16,
    pub(crate) steps: Vec<Step>,
}

pub(crate) fn knobs() -> impl Strategy<Value = Knobs> {
    (
        prop_oneof![Just(4u16), Just(8), Just(64)],
        prop_oneof![6 => Just(0u8), 2 => Just(1), 1 => Just(2)],
        prop_oneof![6 => Just(0u8), 2 => Just(1), 1 => Just(2)],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(depth, slow_disable, slow_shutdown, slow_ready, shadow)| Knobs {
                depth,
                slow_disable,
                slow_shutdown,
                slow_ready,
                shadow,
            },
        )
}

pub(crate) fn device_event() -> impl Strategy<Value = Device> {
    prop_oneof![
        3 => Just(Device::Remove),
        3 => Just(Device::Glitch),
        2 => Just(Device::Cfs),
        2 => Just(Device::Hang),
        2 => Just(Device::Unhang),
        1 => Just(Device::MemoryDecodingOff),
        2 => any::<bool>().prop_map(Device::IgnoreConfigWrites),
        2 => Just(Device::BouncePresence),
        2 => Just(Device::BounceLink),
        2 => Just(Device::LinkFlap),
        3 => any::<bool>().prop_map(|same| Device::Insert { same }),
        1 => Just(Device::AttentionButton),
        3 => any::<bool>().prop_map(Device::Hold),
        2 => any::<bool>().prop_map(Device::MediaErrors),
    ]
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (any::<u8>(), 0..2u8, any::<bool>(), 0..LBAS as u8, 1..=24u8, any::<bool>())
            .prop_map(|(c, q, write, lba, blocks, unaligned)| Step::Submit {
                c, q, write, lba, blocks, unaligned
            }),
        3 => (
            any::<u8>(),
            prop_oneof![Just(Blocking::Read), Just(Blocking::Write), Just(Blocking::Flush)],
            0..LBAS as u8,
            1..=16u8
        )
            .prop_map(|(c, op, lba, blocks)| Step::Blocking { c, op, lba, blocks }),
        6 => (any::<u8>(), 0..2u8).prop_map(|(c, q)| Step::Poll { c, q }),
        2 => (any::<u8>(), any::<bool>(), 0..LBAS as u8, 1..=16u8)
            .prop_map(|(c, write, lba, blocks)| Step::BlockDevice { c, write, lba, blocks }),
        2 => any::<u8>().prop_map(|c| Step::Ring { c }),
        // Mostly short ticks; some past the I/O and admin deadlines.
        5 => prop_oneof![4 => 1..20u16, 1 => 60..1500u16].prop_map(|ms| Step::Tick { ms }),
        1 => any::<u8>().prop_map(|c| Step::Detach { c }),
        1 => Just(Step::Scan),
        6 => (any::<u8>(), device_event()).prop_map(|(d, ev)| Step::Device { d, ev }),
        2 => (1..8u8).prop_map(|n| Step::Release { n }),
    ]
}

pub(crate) fn scenario() -> impl Strategy<Value = Scenario> {
    (
        knobs(),
        proptest::option::of(knobs()),
        proptest::option::weighted(0.3, knobs()),
        prop_oneof![Just(2u16), Just(4), Just(32)],
        proptest::collection::vec(step(), 1..40),
    )
        .prop_map(|(first, second, bus0, depth, steps)| Scenario {
            first,
            second,
            bus0,
            depth,
            steps,
        })
}
