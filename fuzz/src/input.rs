//! Reading the fuzz input: bytes, words, and the misbehaviour rules a byte
//! names.

use bare_nvme_sim::{Misbehaviour, Queues, Rule};

/// A cursor over the input that yields zeroes once exhausted.
pub(crate) struct Input<'a> {
    pub(crate) data: &'a [u8],
}

impl Input<'_> {
    pub(crate) fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

pub(crate) const MISBEHAVIOURS: [Misbehaviour; 7] = [
    Misbehaviour::NeverComplete,
    Misbehaviour::CompleteTwice,
    Misbehaviour::UnknownCid,
    Misbehaviour::StaleCid,
    Misbehaviour::WrongSqId,
    Misbehaviour::WrongPhase,
    Misbehaviour::SqHeadOutOfRange,
];

pub(crate) fn rule(byte: u8, times: u8) -> Option<Rule> {
    let what = *MISBEHAVIOURS.get((byte & 7) as usize)?;
    let queues = match (byte >> 3) & 3 {
        0 => Queues::Io,
        1 => Queues::Admin,
        _ => Queues::Any,
    };
    let times = if times == 0xFF {
        u32::MAX
    } else {
        u32::from(times)
    };
    Some(Rule {
        what,
        queues,
        times,
    })
}
